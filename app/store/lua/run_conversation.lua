-- Run a conversation (OpenHands' `run`): from idle, paused, error, stuck or
-- waiting_for_confirmation (which approves the held calls). Nothing that
-- crashed is re-run: its error stays in the history, and an agent reads it
-- as that call's result. See start_run in _lib.lua.
-- KEYS[1] conversation hash  KEYS[2] events stream  KEYS[3] queue list
-- KEYS[4] agent hash         KEYS[5] confirmation list
-- ARGV[1] now (ISO)  ARGV[2] id for a status event
-- ARGV[3] key prefix of this conversation's action hashes (app/store/keys.py)
-- Direct enqueue (app/messaging/direct_enqueue.py), else absent:
-- KEYS[6] the actions' broker list  KEYS[7] the agent steps' broker list
-- ARGV[4] task-sent event channel ('' = none)
-- A finished conversation is left as it is (send a message first).
-- Returns {'started', status, dispatched action id or '', pushed, step task
--          id or '', step pushed} | {'refused', status} | {'no_conversation'}
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return {'no_conversation'}
end
if status == 'running' then
  return {'refused', status}
end
if status == 'finished' then
  -- As OpenHands: nothing to do until a new message.
  return {'started', status, '', 0, '', 0}
end
local k = {conv = KEYS[1], events = KEYS[2], queue = KEYS[3], agent = KEYS[4],
  confirm = KEYS[5], broker = KEYS[6], step_broker = KEYS[7]}
local a = {now = ARGV[1], status_event_id = ARGV[2], action_key_prefix = ARGV[3],
  channel = ARGV[4]}
local new_status, dispatched, pushed, step_task, step_pushed = start_run(k, a)
redis.call('HSET', KEYS[1], 'updated_at', ARGV[1])
return {'started', new_status, dispatched, pushed, step_task, step_pushed}
