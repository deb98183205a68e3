-- Forget a dead worker once nothing it may hold is left: its lease must
-- still be expired (it did not come back) and its claim index empty.
-- KEYS[1] worker-leases sorted set  KEYS[2] the worker's claim set
-- KEYS[3] the worker's info hash
-- ARGV[1] worker id  ARGV[2] now (server time, epoch seconds)
-- Returns 1 if forgotten, 0 if not.
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if expiry and tonumber(expiry) > tonumber(ARGV[2]) then
  return 0
end
if redis.call('SCARD', KEYS[2]) > 0 then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[3])
return 1
