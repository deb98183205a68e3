-- Claim an agent step before calling the model: only the delivery of the
-- step's current task id, only while it is queued and the conversation runs.
-- A step queued but not started when the run stopped (pause) is dropped:
-- the next `run` queues it again.
-- KEYS[1] conversation hash  KEYS[2] agent hash
-- ARGV[1] task id  ARGV[2] worker id
-- Returns {'claimed', step, attempt, iteration, max iterations, replies
--          recorded so far}
--       | {'not_current', state} (an old or duplicate message)
--       | {'running', owner} (claimed already: redelivered)
--       | {'ended', state} | {'not_running', status}
local f = redis.call('HMGET', KEYS[2], 'step_state', 'step_task', 'step', 'step_owner',
  'max_iterations', 'replies')
if f[2] ~= ARGV[1] then
  return {'not_current', f[1] or ''}
end
if f[1] == 'claimed' then
  return {'running', f[4] or ''}
end
if f[1] ~= 'queued' then
  return {'ended', f[1] or ''}
end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'running' then
  redis.call('HSET', KEYS[2], 'step_state', 'dropped')
  return {'not_running', status}
end
local attempt = redis.call('HINCRBY', KEYS[2], 'step_attempts', 1)
redis.call('HSET', KEYS[2], 'step_state', 'claimed', 'step_owner', ARGV[2])
local iteration
if attempt == 1 then
  iteration = redis.call('HINCRBY', KEYS[1], 'iteration', 1)
else
  iteration = tonumber(redis.call('HGET', KEYS[1], 'iteration'))
end
return {'claimed', f[3], attempt, iteration, f[5], f[6] or '0'}
