-- Reject the calls waiting for confirmation: each gets a
-- UserRejectObservation (built here from a template), the conversation goes
-- to idle, and the agent reads the rejection as each call's result on its
-- next step.
-- KEYS[1] conversation hash  KEYS[2] events stream  KEYS[3] confirmation list
-- ARGV[1] now (ISO)  ARGV[2] now (epoch s)  ARGV[3] id for a status event
-- ARGV[4] UserRejectObservation template JSON (id, action_id, tool_name and
--         tool_call_id filled in per call)
-- ARGV[5] first 24 characters of a fresh uuid4 (event ids: it + a counter)
-- ARGV[6] key prefix of this conversation's action hashes (app/store/keys.py)
-- Returns {'rejected', count} | {'refused', status} | {'no_conversation'}
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return {'no_conversation'}
end
if status ~= 'waiting_for_confirmation' then
  return {'refused', status}
end
local template = cjson.decode(ARGV[4])
local count = 0
for _, id in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  local action_key = ARGV[6] .. id
  local q = redis.call('HMGET', action_key, 'state', 'tool', 'tool_call_id')
  if q[1] == 'pending' then
    count = count + 1
    template.id = ARGV[5] .. string.format('%012x', count)
    template.action_id = id
    template.tool_name = q[2]
    template.tool_call_id = q[3]
    local seq = append_event(KEYS[1], KEYS[2], cjson.encode(template))
    redis.call('HSET', action_key, 'state', 'cancelled', 'finished_at', ARGV[2],
      'terminal_kind', 'UserRejectObservation', 'terminal_seq', seq)
    redis.call('HDEL', action_key, 'task_message', 'sent_event')
  end
end
redis.call('DEL', KEYS[3])
set_status(KEYS[1], KEYS[2], 'idle', ARGV[3], ARGV[1])
redis.call('HSET', KEYS[1], 'updated_at', ARGV[1])
return {'rejected', count}
