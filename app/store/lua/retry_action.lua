-- Retry an ended action as a new one, in one step: check that the original
-- ended, that its call is not quarantined and that no retry of the same call
-- is still unfinished; then store the new action (as submit_action does)
-- and, if the conversation is in error, resume it so that the retry runs.
-- A refused retry writes nothing.
-- KEYS[1..7] and ARGV[1..10] as submit_action (ARGV[2] is '')
-- KEYS[8] the original action's hash  KEYS[9] crashes hash
-- KEYS[10] retries hash (fingerprint -> its latest retry)
-- ARGV[11] quarantine threshold  ARGV[12] '1' = force (ignore the quarantine)
-- ARGV[13] key prefix of this conversation's action hashes (app/keys.py)
-- Direct enqueue, else absent: KEYS[11] the broker's list
-- ARGV[14] the retry's Celery message  ARGV[15] task-sent event channel
-- ARGV[16] task-sent event
-- Returns {'created', seq, dispatched action id or '', pushed}
--       | {'not_ended', state} | {'quarantined', crashes}
--       | {'retry_in_progress', action id} | {'no_conversation'}
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'no_conversation'}
end
local original = redis.call('HGET', KEYS[8], 'state')
if original == 'pending' or original == 'claimed' then
  return {'not_ended', original}
end
local crashes = tonumber(redis.call('HGET', KEYS[9], ARGV[9]) or '0')
if crashes >= tonumber(ARGV[11]) and ARGV[12] ~= '1' then
  return {'quarantined', crashes}
end
-- One unfinished retry per call at a time: a retry storm makes one action,
-- and each further retry waits for the last one's outcome (and its crash
-- count) first.
local previous = redis.call('HGET', KEYS[10], ARGV[9])
if previous then
  local state = redis.call('HGET', ARGV[13] .. previous, 'state')
  if state == 'pending' or state == 'claimed' then
    return {'retry_in_progress', previous}
  end
end

local k, a = new_action_spec(11, 13, 14)
-- In error (after a crash) the retry resumes the conversation; paused stays
-- paused until an explicit resume.
local runnable = {idle = true, running = true, finished = true, error = true}
local seq, dispatched, pushed = add_action(k, a, runnable)
redis.call('HSET', KEYS[10], ARGV[9], ARGV[1])
return {'created', seq, dispatched, pushed}
