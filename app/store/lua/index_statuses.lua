-- Backfill of the per-status index (conversations created before it), one
-- batch in one step, so no status change can slip between the read and the
-- write: each conversation ends up in exactly the set of its current status,
-- a deleted one in none. Idempotent. Runs on a single Redis only (it touches
-- many conversations' slots; docs/design.md, "The per-status index").
-- KEYS[i] conversation hash of ARGV[2i-1], the conversation id
-- ARGV[2i] its score in the main index
-- Returns the number of conversations indexed.
local indexed = 0
for i, conv_key in ipairs(KEYS) do
  local id, score = ARGV[2 * i - 1], ARGV[2 * i]
  local status = redis.call('HGET', conv_key, 'status')
  for _, other in ipairs(STATUSES) do
    if other ~= status then
      redis.call('ZREM', STATUS_INDEX_PREFIX .. other, id)
    end
  end
  if status then
    redis.call('ZADD', STATUS_INDEX_PREFIX .. status, score, id)
    indexed = indexed + 1
  end
end
return indexed
