-- Stop a conversation after a crash or a cancellation, in one step: give each
-- listed unfinished action its terminal event, optionally drop the queue, set
-- the status. The caller read the state first (to build the events); if any
-- of it changed since, nothing is written and the caller reads again.
-- KEYS[1] conversation hash  KEYS[2] events stream  KEYS[3] queue list
-- KEYS[4] crashes hash       KEYS[5..] the listed actions' hashes
-- ARGV[1] now (ISO)  ARGV[2] now (epoch s)  ARGV[3] id for a status event
-- ARGV[4] new status  ARGV[5] expected active action ('' = none)
-- ARGV[6] expected queue, ids joined by ','  ARGV[7] '1' = clear the queue
-- then 7 values per listed action, from ARGV[8]:
--   action id, allowed states (',pending,claimed,'), fence ('' = any),
--   new state, event JSON, terminal event kind, fingerprint to count as a
--   crash ('' = not a crash)
-- Returns {'ok', number of events appended} | {'conflict', reason}
local active = redis.call('HGET', KEYS[1], 'active') or ''
if active ~= ARGV[5] then
  return {'conflict', 'active'}
end
local queue = table.concat(redis.call('LRANGE', KEYS[3], 0, -1), ',')
if queue ~= ARGV[6] then
  return {'conflict', 'queue'}
end
local n = (#KEYS - 4)
for i = 1, n do
  local a = 8 + (i - 1) * 7
  local f = redis.call('HMGET', KEYS[4 + i], 'state', 'fence')
  if not f[1] or not string.find(ARGV[a + 1], ',' .. f[1] .. ',', 1, true) then
    return {'conflict', 'state'}
  end
  if ARGV[a + 2] ~= '' and f[2] ~= ARGV[a + 2] then
    return {'conflict', 'fence'}
  end
end
for i = 1, n do
  local a = 8 + (i - 1) * 7
  local seq = append_event(KEYS[1], KEYS[2], ARGV[a + 4])
  redis.call('HSET', KEYS[4 + i], 'state', ARGV[a + 3], 'finished_at', ARGV[2],
    'terminal_kind', ARGV[a + 5], 'terminal_seq', seq)
  -- An ended action is never sent: drop a message kept for direct enqueue.
  redis.call('HDEL', KEYS[4 + i], 'task_message', 'sent_event')
  if ARGV[a + 6] ~= '' then
    redis.call('HINCRBY', KEYS[4], ARGV[a + 6], 1)
  end
  if active == ARGV[a] then
    redis.call('HSET', KEYS[1], 'active', '')
  end
  redis.call('LREM', KEYS[3], 0, ARGV[a])
end
if ARGV[7] == '1' then
  redis.call('DEL', KEYS[3])
end
set_status(KEYS[1], KEYS[2], ARGV[4], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[1], 'updated_at', ARGV[1])
return {'ok', n}
