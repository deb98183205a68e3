-- Pause a conversation: nothing new is dispatched (no next action, no next
-- agent step) until `run` or `resume`. The active action (if any) is
-- returned so that an interrupt can stop it; an interrupt also cancels the
-- agent step in flight (its reply is never recorded; the model is asked
-- again on the next run). A plain pause lets both finish.
-- KEYS[1] conversation hash  KEYS[2] events stream  KEYS[3] agent hash
-- ARGV[1] now (ISO)  ARGV[2] id for a status event  ARGV[3] '1' = interrupt
-- Returns {'paused', active action id or ''} | {'refused', status}
--       | {'no_conversation'}
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return {'no_conversation'}
end
if status == 'error' or status == 'waiting_for_confirmation' then
  -- error: run or resume it first; waiting: confirm or reject the held calls.
  return {'refused', status}
end
if status == 'finished' or status == 'stuck' then
  -- Nothing runs: nothing to pause (as OpenHands, a no-op).
  return {'paused', ''}
end
set_status(KEYS[1], KEYS[2], 'paused', ARGV[2], ARGV[1])
if ARGV[3] == '1' and redis.call('HGET', KEYS[3], 'step_state') == 'claimed' then
  redis.call('HSET', KEYS[3], 'step_state', 'dropped')
end
return {'paused', redis.call('HGET', KEYS[1], 'active') or ''}
