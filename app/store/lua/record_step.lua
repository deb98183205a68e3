-- Record an agent step's reply, once: only the worker that claimed this very
-- step writes, so a second delivery of a finished step, or a step that ran
-- again after its worker died, appends nothing twice. In one step: the
-- agent's text (MessageEvent), its tool calls (one ActionEvent and one
-- pending action each, sharing llm_response_id), and what comes next: the
-- first call runs, or the calls wait for confirmation, or the run is
-- finished, or (nothing to run) the next step is queued.
-- KEYS[1] conversation hash  KEYS[2] events stream  KEYS[3] queue list
-- KEYS[4] actions list       KEYS[5] tool-calls hash  KEYS[6] agent hash
-- KEYS[7] confirmation list
-- ARGV[1] step  ARGV[2] worker id  ARGV[3] now (ISO)  ARGV[4] id for a status event
-- ARGV[5] key prefix of this conversation's action hashes (app/store/keys.py)
-- ARGV[6] '1' = the calls wait for confirmation
-- ARGV[7] what follows without calls: 'finished' | 'continue'
-- ARGV[8] MessageEvent JSON or ''  ARGV[9] number of calls
-- ARGV[10] task-sent event channel ('' = none)
-- then per call, 8 values: action id, tool_call_id, ActionEvent JSON, tool,
--   arguments JSON, fingerprint, its Celery message ('' = none), task-sent event
-- Direct enqueue, else absent: KEYS[8] actions' broker list
-- KEYS[9] agent steps' broker list
-- Returns {'ok', status, dispatched action id or '', pushed, step task id or
--          '', step pushed} | {'stale', step state}
local f = redis.call('HMGET', KEYS[6], 'step', 'step_state', 'step_owner')
if f[1] ~= ARGV[1] or f[2] ~= 'claimed' or f[3] ~= ARGV[2] then
  return {'stale', f[2] or ''}
end
local cid = redis.call('HGET', KEYS[1], 'id')
if ARGV[8] ~= '' then
  append_event(KEYS[1], KEYS[2], ARGV[8])
end
local hold = ARGV[6] == '1'
local n = tonumber(ARGV[9])
for i = 0, n - 1 do
  local b = 11 + i * 8
  local id, tool_call_id = ARGV[b], ARGV[b + 1]
  local seq = append_event(KEYS[1], KEYS[2], ARGV[b + 2])
  local action_key = ARGV[5] .. id
  redis.call('HSET', action_key,
    'id', id, 'conversation_id', cid, 'state', 'pending', 'tool', ARGV[b + 3],
    'arguments', ARGV[b + 4], 'tool_call_id', tool_call_id, 'fingerprint', ARGV[b + 5],
    'retry_of', '', 'created_at', ARGV[3], 'event_seq', seq, 'attempt', 0, 'fence', 0)
  if ARGV[b + 6] ~= '' then
    redis.call('HSET', action_key, 'task_message', ARGV[b + 6], 'sent_event', ARGV[b + 7])
  end
  redis.call('RPUSH', KEYS[4], id)
  redis.call('HSET', KEYS[5], tool_call_id, id)
  if hold then
    redis.call('RPUSH', KEYS[7], id)
  else
    redis.call('RPUSH', KEYS[3], id)
  end
end
redis.call('HSET', KEYS[6], 'step_state', 'done')
redis.call('HINCRBY', KEYS[6], 'replies', 1)

local status = redis.call('HGET', KEYS[1], 'status')
local dispatched, pushed, step_task, step_pushed = '', 0, '', 0
if status == 'running' then
  if n > 0 and hold then
    set_status(KEYS[1], KEYS[2], 'waiting_for_confirmation', ARGV[4], ARGV[3])
    status = 'waiting_for_confirmation'
  elseif n > 0 then
    if (redis.call('HGET', KEYS[1], 'active') or '') == '' then
      dispatched = dispatch_next(KEYS[1], KEYS[3]) or ''
      if dispatched ~= '' and KEYS[8] then
        pushed = push_stored_message(ARGV[5] .. dispatched, KEYS[8], ARGV[10])
      end
    end
  elseif ARGV[7] == 'finished' then
    set_status(KEYS[1], KEYS[2], 'finished', ARGV[4], ARGV[3])
    status = 'finished'
  else
    step_task, step_pushed = queue_step(KEYS[1], KEYS[6], KEYS[9], false)
  end
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
return {'ok', status, dispatched, pushed, step_task, step_pushed}
