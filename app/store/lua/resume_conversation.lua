-- Resume a stopped conversation: error|paused -> running (the next queued
-- action becomes active) or idle (nothing queued). Nothing is re-run: the
-- actions that crashed stay errored, their AgentErrorEvents stay in history.
-- KEYS[1] conversation hash  KEYS[2] events stream  KEYS[3] queue list
-- ARGV[1] now (ISO)  ARGV[2] id for a status event
-- ARGV[3] key prefix of this conversation's action hashes (app/store/keys.py)
-- Direct enqueue (app/messaging/direct_enqueue.py), else absent:
-- KEYS[4] the broker's list  ARGV[4] task-sent event channel ('' = none)
-- Returns {'resumed', new status, dispatched action id or '', 1 if its
--          message was pushed here else 0}
--       | {'refused', current status} | {'no_conversation'}
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return {'no_conversation'}
end
if status ~= 'error' and status ~= 'paused' then
  return {'refused', status}
end
local next_id = ''
local pushed = 0
local active = redis.call('HGET', KEYS[1], 'active') or ''
if active == '' then
  next_id = dispatch_next(KEYS[1], KEYS[3]) or ''
  if next_id ~= '' and KEYS[4] then
    pushed = push_stored_message(ARGV[3] .. next_id, KEYS[4], ARGV[4])
  end
end
local new_status = 'idle'
if next_id ~= '' or active ~= '' then
  new_status = 'running'
end
set_status(KEYS[1], KEYS[2], new_status, ARGV[2], ARGV[1])
return {'resumed', new_status, next_id, pushed}
