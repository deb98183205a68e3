-- End a claimed action normally (observation or tool-level error), only with
-- the matching fencing token, and hand the turn to the next queued action.
-- KEYS[1] conversation hash  KEYS[2] events stream  KEYS[3] queue list
-- KEYS[4] action hash  KEYS[5] agent hash
-- ARGV[1] action id  ARGV[2] fence  ARGV[3] new state  ARGV[4] event JSON
-- ARGV[5] now (ISO)  ARGV[6] now (epoch s)  ARGV[7] id for a status event
-- ARGV[8] terminal event kind  ARGV[9] status when nothing is left to run
--   ('idle', or 'finished' after the agent's finish tool)
-- ARGV[10] key prefix of this conversation's action hashes (app/store/keys.py)
-- Direct enqueue (app/messaging/direct_enqueue.py), else absent:
-- KEYS[6] the actions' broker list  KEYS[7] the agent steps' broker list
-- ARGV[11] task-sent event channel ('' = none)
-- When the last queued call of an agent run ends (and it was not `finish`),
-- the run's next step is queued instead of going idle.
-- Returns {'ok', seq, next action id or '', 1 if its message was pushed here
--          else 0, step task id or '', 1 if the step's message was pushed}
--       | {'stale', current state}
local f = redis.call('HMGET', KEYS[4], 'state', 'fence')
if f[1] ~= 'claimed' or f[2] ~= ARGV[2] then
  return {'stale', f[1] or 'missing'}
end
local seq = append_event(KEYS[1], KEYS[2], ARGV[4])
redis.call('HSET', KEYS[4], 'state', ARGV[3], 'finished_at', ARGV[6],
  'terminal_kind', ARGV[8], 'terminal_seq', seq)
local next_id = ''
local pushed = 0
local step_task, step_pushed = '', 0
if redis.call('HGET', KEYS[1], 'active') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'active', '')
  if redis.call('HGET', KEYS[1], 'status') == 'running' then
    next_id = dispatch_next(KEYS[1], KEYS[3]) or ''
    if next_id ~= '' then
      if KEYS[6] then
        pushed = push_stored_message(ARGV[10] .. next_id, KEYS[6], ARGV[11])
      end
    elseif redis.call('HGET', KEYS[1], 'agent_run') == '1' and ARGV[9] ~= 'finished' then
      step_task, step_pushed = queue_step(KEYS[1], KEYS[5], KEYS[7], false)
    else
      set_status(KEYS[1], KEYS[2], ARGV[9], ARGV[7], ARGV[5])
    end
  end
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[5])
return {'ok', seq, next_id, pushed, step_task, step_pushed}
