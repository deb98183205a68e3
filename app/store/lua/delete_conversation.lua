-- Delete a conversation and everything stored with it, unless it is running
-- or waiting for confirmation (work of it may be in flight: pause, interrupt
-- or answer it first). Its keys share one hash slot (KEYS[*] and the action
-- hashes, built from ARGV[1] + action id). It leaves its per-status index
-- here (under Cluster: the caller applies the move); the other global
-- indexes are the caller's to clean.
-- KEYS[1] conversation hash  KEYS[2] events  KEYS[3] queue  KEYS[4] actions list
-- KEYS[5] idempotency  KEYS[6] tool calls  KEYS[7] crashes  KEYS[8] retries
-- KEYS[9] agent hash  KEYS[10] confirmations
-- ARGV[1] action key prefix
-- ARGV[2..4] (optional; archival) the status, last_seq and updated_at the
-- caller exported: if the conversation is not exactly so any more (it changed
-- after the export), nothing is deleted.
-- Returns {'no_conversation'} | {'refused', status} | {'changed', status}
--   | {'deleted', action ids...}
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return {'no_conversation'}
end
if status == 'running' or status == 'waiting_for_confirmation' then
  return {'refused', status}
end
if ARGV[2] then
  local seen = redis.call('HMGET', KEYS[1], 'last_seq', 'updated_at')
  if status ~= ARGV[2] or (seen[1] or '0') ~= ARGV[3] or (seen[2] or '') ~= ARGV[4] then
    return {'changed', status}
  end
end
local ids = redis.call('LRANGE', KEYS[4], 0, -1)
for _, id in ipairs(ids) do
  redis.call('DEL', ARGV[1] .. id)
end
reindex_status(KEYS[1], redis.call('HGET', KEYS[1], 'id'), status, false)
redis.call('DEL', unpack(KEYS))
local result = {'deleted'}
for _, id in ipairs(ids) do
  result[#result + 1] = id
end
return result
