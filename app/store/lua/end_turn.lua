-- Give back a periodic job's turn, only if it is still the caller's.
-- KEYS[1] the turn  ARGV[1] its owner
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
