-- A step whose worker is gone (lease expired, pool child lost, shutdown):
-- a step is safe to run again (it only calls the model, and records once),
-- so it is queued again with a new task id, up to a number of deliveries;
-- then the conversation goes to error (a step that kills its worker every
-- time is a poison too). A run that stopped meanwhile drops the step.
-- KEYS[1] conversation hash  KEYS[2] events stream  KEYS[3] agent hash
-- ARGV[1] the owner that is gone  ARGV[2] most deliveries of one step
-- ARGV[3] ConversationErrorEvent JSON for the last one  ARGV[4] now (ISO)
-- ARGV[5] id for a status event
-- Direct enqueue, else absent: KEYS[4] agent steps' broker list
-- Returns {'requeued', task id, pushed} | {'errored'} | {'dropped'} | {'skip', state}
local f = redis.call('HMGET', KEYS[3], 'step_state', 'step_owner', 'step_attempts')
if f[1] ~= 'claimed' or f[2] ~= ARGV[1] then
  return {'skip', f[1] or ''}
end
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  redis.call('HSET', KEYS[3], 'step_state', 'dropped')
  return {'dropped'}
end
if tonumber(f[3] or '0') >= tonumber(ARGV[2]) then
  append_event(KEYS[1], KEYS[2], ARGV[3])
  redis.call('HSET', KEYS[3], 'step_state', 'done')
  if set_status(KEYS[1], KEYS[2], 'error', ARGV[5], ARGV[4]) ~= 0 then
    record_error(KEYS[1], ARGV[3])
  end
  return {'errored'}
end
local task_id, pushed = queue_step(KEYS[1], KEYS[3], KEYS[4], true)
return {'requeued', task_id, pushed}
