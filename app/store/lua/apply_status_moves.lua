-- Apply per-status index moves (the main index's slot only: under Redis
-- Cluster a conversation's script returns its move and the caller applies
-- it here; the backfill applies what it read). A move older than the one
-- the index holds for that conversation (its revision) is ignored, so moves
-- applied out of order, or a backfill's read overtaken by a transition,
-- cannot leave a conversation in the wrong set.
-- KEYS[1] main index  KEYS[2] status revisions hash  KEYS[3..] the status sets, as STATUSES
-- ARGV: triples of conversation id, revision, new status ('' = deleted)
-- Returns the number of moves applied.
local applied = 0
for i = 1, #ARGV, 3 do
  local id, revision, new = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local held = tonumber(redis.call('HGET', KEYS[2], id) or '-1')
  if revision > held then
    local target = false
    for j = 1, #STATUSES do
      if STATUSES[j] == new then
        target = KEYS[2 + j]
      else
        redis.call('ZREM', KEYS[2 + j], id)
      end
    end
    if target then
      local score = redis.call('ZSCORE', KEYS[1], id) or redis.call('TIME')[1]
      redis.call('ZADD', target, score, id)
      redis.call('HSET', KEYS[2], id, revision)
    else
      redis.call('HDEL', KEYS[2], id)
    end
    applied = applied + 1
  end
end
return applied
