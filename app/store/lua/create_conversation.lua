-- Create a conversation if it does not exist yet (creating twice is a no-op,
-- and keeps the first one's agent).
-- KEYS[1] conversation hash  KEYS[2] agent hash
-- ARGV[1] conversation id  ARGV[2] now (ISO)
-- ARGV[3] agent spec JSON ('' = no agent)  ARGV[4] max iterations
-- ARGV[5] the agent step's Celery message template ('' = sent with Celery;
--         app/messaging/direct_enqueue.py)
-- Returns 1 if created, 0 if it already existed.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'status', 'idle', 'created_at', ARGV[2],
  'updated_at', ARGV[2], 'last_seq', 0, 'active', '')
reindex_status(KEYS[1], ARGV[1], false, 'idle')
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'agent', '1', 'agent_run', '', 'iteration', 0)
  redis.call('HSET', KEYS[2], 'spec', ARGV[3], 'max_iterations', ARGV[4],
    'step_message', ARGV[5], 'step', 0, 'step_state', '', 'step_task', '', 'step_owner', '',
    'step_attempts', 0, 'step_sends', 0)
end
return 1
