-- Store a new action: append its ActionEvent, queue it, and make it the
-- active action if the conversation may run and nothing else is active.
-- KEYS[1] conversation hash     KEYS[2] events stream   KEYS[3] queue list
-- KEYS[4] actions list          KEYS[5] idempotency hash
-- KEYS[6] tool-calls hash       KEYS[7] the new action's hash
-- ARGV[1] action id  ARGV[2] idempotency key ('' = none)  ARGV[3] tool_call_id
-- ARGV[4] ActionEvent JSON (without seq)  ARGV[5] now (ISO)
-- ARGV[6] id for a status event  ARGV[7] tool  ARGV[8] arguments JSON
-- ARGV[9] fingerprint  ARGV[10] retry_of ('' = none)
-- ARGV[11] key prefix of this conversation's action hashes (app/store/keys.py)
-- Direct enqueue (app/messaging/direct_enqueue.py), else absent:
-- KEYS[8] the broker's list  ARGV[12] the action's Celery message
-- ARGV[13] task-sent event channel ('' = none)  ARGV[14] task-sent event
-- Returns {'created', seq, dispatched action id or '', 1 if its message was
--          pushed here else 0} | {'existing', action id}
--       | {'idempotency_conflict', action id} (the key's action is another call)
--       | {'duplicate_tool_call', action id} | {'no_conversation'}
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'no_conversation'}
end
if ARGV[2] ~= '' then
  local existing = redis.call('HGET', KEYS[5], ARGV[2])
  if existing then
    -- Same key, same call (tool + arguments): the client retrying. Same
    -- key, another call: a client bug that must not pass silently.
    local stored = redis.call('HGET', ARGV[11] .. existing, 'fingerprint')
    if stored and stored ~= ARGV[9] then
      return {'idempotency_conflict', existing}
    end
    return {'existing', existing}
  end
end
local other = redis.call('HGET', KEYS[6], ARGV[3])
if other then
  return {'duplicate_tool_call', other}
end

local k, a = new_action_spec(8, 11, 12)
local seq, dispatched, pushed = add_action(k, a, {idle = true, running = true, finished = true})
return {'created', seq, dispatched, pushed}
