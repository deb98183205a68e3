-- End a claimed action normally (observation or tool-level error), only with
-- the matching fencing token, and hand the turn to the next queued action.
-- KEYS[1] conversation hash  KEYS[2] events stream  KEYS[3] queue list
-- KEYS[4] action hash
-- ARGV[1] action id  ARGV[2] fence  ARGV[3] new state  ARGV[4] event JSON
-- ARGV[5] now (ISO)  ARGV[6] now (epoch s)  ARGV[7] id for a status event
-- ARGV[8] terminal event kind  ARGV[9] status when nothing is left to run
--   ('idle', or 'finished' after the agent's finish tool)
-- ARGV[10] key prefix of this conversation's action hashes (app/store/keys.py)
-- Direct enqueue (app/messaging/direct_enqueue.py), else absent:
-- KEYS[5] the broker's list  ARGV[11] task-sent event channel ('' = none)
-- Returns {'ok', seq, next action id or '', 1 if its message was pushed here
--          else 0} | {'stale', current state}
local f = redis.call('HMGET', KEYS[4], 'state', 'fence')
if f[1] ~= 'claimed' or f[2] ~= ARGV[2] then
  return {'stale', f[1] or 'missing'}
end
local seq = append_event(KEYS[1], KEYS[2], ARGV[4])
redis.call('HSET', KEYS[4], 'state', ARGV[3], 'finished_at', ARGV[6],
  'terminal_kind', ARGV[8], 'terminal_seq', seq)
local next_id = ''
local pushed = 0
if redis.call('HGET', KEYS[1], 'active') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'active', '')
  if redis.call('HGET', KEYS[1], 'status') == 'running' then
    next_id = dispatch_next(KEYS[1], KEYS[3]) or ''
    if next_id == '' then
      set_status(KEYS[1], KEYS[2], ARGV[9], ARGV[7], ARGV[5])
    elseif KEYS[5] then
      pushed = push_stored_message(ARGV[10] .. next_id, KEYS[5], ARGV[11])
    end
  end
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[5])
return {'ok', seq, next_id, pushed}
