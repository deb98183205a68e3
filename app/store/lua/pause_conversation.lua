-- Pause a conversation: nothing new is dispatched until resume. The active
-- action (if any) is returned so the caller can stop it.
-- KEYS[1] conversation hash  KEYS[2] events stream
-- ARGV[1] now (ISO)  ARGV[2] id for a status event
-- Returns {'paused', active action id or ''} | {'refused', status}
--       | {'no_conversation'}
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return {'no_conversation'}
end
if status == 'error' then
  return {'refused', status}
end
set_status(KEYS[1], KEYS[2], 'paused', ARGV[2], ARGV[1])
return {'paused', redis.call('HGET', KEYS[1], 'active') or ''}
