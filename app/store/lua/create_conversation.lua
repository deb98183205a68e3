-- Create a conversation if it does not exist yet (creating twice is a no-op).
-- KEYS[1] conversation hash
-- ARGV[1] conversation id  ARGV[2] now (ISO)
-- Returns 1 if created, 0 if it already existed.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'status', 'idle', 'created_at', ARGV[2],
  'updated_at', ARGV[2], 'last_seq', 0, 'active', '')
return 1
