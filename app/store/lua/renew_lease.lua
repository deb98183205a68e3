-- Renew a worker's lease, timed by the Redis server's clock (so workers on
-- machines with skewed clocks agree with the sweeper).
-- KEYS[1] worker-leases sorted set
-- ARGV[1] worker id  ARGV[2] lease length in seconds
-- Returns the lease expiry (epoch seconds, as a string).
local t = redis.call('TIME')
local expiry = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], expiry, ARGV[1])
return tostring(expiry)
