-- Store a new action: append its ActionEvent, queue it, and make it the
-- active action if the conversation may run and nothing else is active.
-- KEYS[1] conversation hash     KEYS[2] events stream   KEYS[3] queue list
-- KEYS[4] actions list          KEYS[5] idempotency hash
-- KEYS[6] tool-calls hash       KEYS[7] the new action's hash
-- ARGV[1] action id  ARGV[2] idempotency key ('' = none)  ARGV[3] tool_call_id
-- ARGV[4] ActionEvent JSON (without seq)  ARGV[5] now (ISO)
-- ARGV[6] id for a status event  ARGV[7] tool  ARGV[8] arguments JSON
-- ARGV[9] fingerprint  ARGV[10] retry_of ('' = none)
-- Direct enqueue (app/direct_enqueue.py), else absent:
-- KEYS[8] the broker's list  ARGV[11] the action's Celery message
-- ARGV[12] task-sent event channel ('' = none)  ARGV[13] task-sent event
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
    local stored = redis.call('HGET', action_key_of(KEYS[1], existing), 'fingerprint')
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

local seq = append_event(KEYS[1], KEYS[2], ARGV[4])
redis.call('HSET', KEYS[7],
  'id', ARGV[1], 'conversation_id', redis.call('HGET', KEYS[1], 'id'),
  'state', 'pending', 'tool', ARGV[7], 'arguments', ARGV[8],
  'tool_call_id', ARGV[3], 'fingerprint', ARGV[9], 'retry_of', ARGV[10],
  'created_at', ARGV[5], 'event_seq', seq, 'attempt', 0, 'fence', 0)
redis.call('RPUSH', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[6], ARGV[3], ARGV[1])
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[5], ARGV[2], ARGV[1])
end
redis.call('RPUSH', KEYS[3], ARGV[1])

local dispatched = ''
local pushed = 0
local status = redis.call('HGET', KEYS[1], 'status')
local active = redis.call('HGET', KEYS[1], 'active')
local may_run = status == 'idle' or status == 'running' or status == 'finished'
if may_run and (not active or active == '') then
  dispatched = dispatch_next(KEYS[1], KEYS[3])
  set_status(KEYS[1], KEYS[2], 'running', ARGV[6], ARGV[5])
end
if KEYS[8] then
  if dispatched == ARGV[1] then
    redis.call('LPUSH', KEYS[8], ARGV[11])
    if ARGV[13] ~= '' then
      redis.call('PUBLISH', ARGV[12], ARGV[13])
    end
    pushed = 1
  else
    -- Kept until the action's turn comes (pushed and removed then).
    redis.call('HSET', KEYS[7], 'task_message', ARGV[11], 'sent_event', ARGV[13])
    if dispatched ~= '' then
      pushed = push_stored_message(action_key_of(KEYS[1], dispatched), KEYS[8], ARGV[12])
    end
  end
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[5])
return {'created', seq, dispatched, pushed}
