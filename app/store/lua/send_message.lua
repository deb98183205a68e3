-- A user message: append its MessageEvent; a finished or stuck conversation
-- goes back to idle (as in OpenHands); with `run`, the conversation runs
-- (start_run in _lib.lua) unless it already does (the running agent reads
-- the message at its next step) or waits for a confirmation (confirm or
-- reject first).
-- KEYS[1] conversation hash  KEYS[2] events stream  KEYS[3] queue list
-- KEYS[4] agent hash         KEYS[5] confirmation list
-- ARGV[1] now (ISO)  ARGV[2] id for a status event
-- ARGV[3] key prefix of this conversation's action hashes (app/store/keys.py)
-- ARGV[4] MessageEvent JSON (without seq)  ARGV[5] '1' = run
-- ARGV[6] id for a second status event
-- Direct enqueue, else absent: KEYS[6] actions' broker list
-- KEYS[7] agent steps' broker list  ARGV[7] task-sent event channel
-- Returns {'sent', seq, status, dispatched action id or '', pushed, step task
--          id or '', step pushed} | {'no_conversation'}
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return {'no_conversation'}
end
local seq = append_event(KEYS[1], KEYS[2], ARGV[4])
if redis.call('HGET', KEYS[1], 'agent') == '1' then
  -- The task: every step shows it to the model, found without a scan.
  redis.call('HSETNX', KEYS[4], 'first_message_seq', seq)
end
if status == 'finished' or status == 'stuck' then
  set_status(KEYS[1], KEYS[2], 'idle', ARGV[6], ARGV[1])
  status = 'idle'
end
local dispatched, pushed, step_task, step_pushed = '', 0, '', 0
if ARGV[5] == '1' and status ~= 'running' and status ~= 'waiting_for_confirmation' then
  local k = {conv = KEYS[1], events = KEYS[2], queue = KEYS[3], agent = KEYS[4],
    confirm = KEYS[5], broker = KEYS[6], step_broker = KEYS[7]}
  local a = {now = ARGV[1], status_event_id = ARGV[2], action_key_prefix = ARGV[3],
    channel = ARGV[7]}
  status, dispatched, pushed, step_task, step_pushed = start_run(k, a)
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[1])
return {'sent', seq, status, dispatched, pushed, step_task, step_pushed}
