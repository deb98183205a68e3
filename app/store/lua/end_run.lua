-- End an agent run from its step (a model error, the iteration limit, the
-- agent stuck, a bug in the step): only the worker that claimed this step
-- writes. Appends the event (a ConversationErrorEvent, or '' = none), ends
-- the step and sets the status (error | stuck), which ends the run.
-- KEYS[1] conversation hash  KEYS[2] events stream  KEYS[3] agent hash
-- ARGV[1] step  ARGV[2] worker id  ARGV[3] now (ISO)  ARGV[4] id for a status event
-- ARGV[5] event JSON or ''  ARGV[6] new status
-- Returns {'ok'} | {'stale', step state}
local f = redis.call('HMGET', KEYS[3], 'step', 'step_state', 'step_owner')
if f[1] ~= ARGV[1] or f[2] ~= 'claimed' or f[3] ~= ARGV[2] then
  return {'stale', f[2] or ''}
end
if ARGV[5] ~= '' then
  append_event(KEYS[1], KEYS[2], ARGV[5])
end
redis.call('HSET', KEYS[3], 'step_state', 'done')
if set_status(KEYS[1], KEYS[2], ARGV[6], ARGV[4], ARGV[3]) ~= 0 and ARGV[6] == 'error'
    and ARGV[5] ~= '' then
  record_error(KEYS[1], ARGV[5])
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
return {'ok'}
