-- Store a new action: append its ActionEvent, queue it, and make it the
-- active action if the conversation may run and nothing else is active.
-- KEYS[1] conversation hash     KEYS[2] events stream   KEYS[3] queue list
-- KEYS[4] actions list          KEYS[5] idempotency hash
-- KEYS[6] tool-calls hash       KEYS[7] the new action's hash
-- ARGV[1] action id  ARGV[2] idempotency key ('' = none)  ARGV[3] tool_call_id
-- ARGV[4] ActionEvent JSON (without seq)  ARGV[5] now (ISO)
-- ARGV[6] id for a status event  ARGV[7] tool  ARGV[8] arguments JSON
-- ARGV[9] fingerprint  ARGV[10] retry_of ('' = none)
-- Returns {'created', seq, dispatched action id or ''} | {'existing', action id}
--       | {'duplicate_tool_call', action id} | {'no_conversation'}
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'no_conversation'}
end
if ARGV[2] ~= '' then
  local existing = redis.call('HGET', KEYS[5], ARGV[2])
  if existing then
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
local status = redis.call('HGET', KEYS[1], 'status')
local active = redis.call('HGET', KEYS[1], 'active')
local may_run = status == 'idle' or status == 'running' or status == 'finished'
if may_run and (not active or active == '') then
  dispatched = dispatch_next(KEYS[1], KEYS[3])
  set_status(KEYS[1], KEYS[2], 'running', ARGV[6], ARGV[5])
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[5])
return {'created', seq, dispatched}
