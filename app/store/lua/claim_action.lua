-- Claim an action before running it: pending -> claimed, with the owner and
-- a new fencing token. Counts every delivery as an attempt, claimed or not.
-- KEYS[1] conversation hash   KEYS[2] action hash
-- ARGV[1] action id  ARGV[2] worker id  ARGV[3] host  ARGV[4] pid
-- Returns {'claimed', fence, attempt, tool, arguments JSON, tool_call_id}
--       | {'not_pending', state, owner, fence, attempt}
--       | {'not_dispatched', attempt}   (queued behind another action)
--       | {'missing'}
if redis.call('EXISTS', KEYS[2]) == 0 then
  return {'missing'}
end
local attempt = redis.call('HINCRBY', KEYS[2], 'attempt', 1)
local f = redis.call('HMGET', KEYS[2], 'state', 'owner', 'fence', 'tool', 'arguments', 'tool_call_id')
if f[1] ~= 'pending' then
  return {'not_pending', f[1], f[2] or '', f[3], attempt}
end
if redis.call('HGET', KEYS[1], 'active') ~= ARGV[1] then
  return {'not_dispatched', attempt}
end
local fence = redis.call('HINCRBY', KEYS[2], 'fence', 1)
local t = redis.call('TIME')  -- server time: comparable across hosts
redis.call('HSET', KEYS[2], 'state', 'claimed', 'owner', ARGV[2], 'host', ARGV[3],
  'pid', ARGV[4], 'claimed_at', t[1] .. '.' .. string.format('%06d', tonumber(t[2])))
-- A message kept for direct enqueue but sent by Celery instead (resume, recovery).
redis.call('HDEL', KEYS[2], 'task_message', 'sent_event')
return {'claimed', fence, attempt, f[4], f[5], f[6]}
