-- Stop a conversation after a crash or a cancellation, in one step: give the
-- target action its terminal event, optionally end every action queued behind
-- it ('not_run', built here from a template so the caller never reads the
-- queue), set the status. Work is O(queue) inside Redis, O(1) for the caller.
-- KEYS[1] conversation hash  KEYS[2] events stream  KEYS[3] queue list
-- KEYS[4] crashes hash       KEYS[5] the target action's hash
-- KEYS[6] the target's output-tail copy (it goes with the event that holds it)
-- ARGV[1] now (ISO)  ARGV[2] now (epoch s)  ARGV[3] id for a status event
-- ARGV[4] new status  ARGV[5] target action id
-- ARGV[6] the target state the event was built for ('pending' | 'claimed')
-- ARGV[7] expected fence ('' = any)  ARGV[8] the target's new state
-- ARGV[9] the target's event JSON  ARGV[10] its kind
-- ARGV[11] fingerprint to count as a crash ('' = not a crash)
-- ARGV[12] '1' = end the queued actions and clear the queue
-- ARGV[13] not_run event template JSON (its tool_name, tool_call_id,
--          action_id and id are filled in per action)
-- ARGV[14] first 24 characters of a fresh uuid4: not_run event ids are it
--          followed by a 12-digit hex counter
-- ARGV[15] key prefix of this conversation's action hashes (app/keys.py)
-- Returns {'ok', events appended} | {'ended', state} (already finished)
--       | {'stale'} (fence moved on) | {'moved', state} (state changed since
--         the caller read it: read again and rebuild the event)
local f = redis.call('HMGET', KEYS[5], 'state', 'fence')
if not f[1] then
  return {'ended', 'missing'}
end
if f[1] ~= 'pending' and f[1] ~= 'claimed' then
  return {'ended', f[1]}
end
if ARGV[7] ~= '' and f[2] ~= ARGV[7] then
  return {'stale'}
end
if f[1] ~= ARGV[6] then
  return {'moved', f[1]}
end

local function end_action(action_key, state, event_json, kind)
  local seq = append_event(KEYS[1], KEYS[2], event_json)
  redis.call('HSET', action_key, 'state', state, 'finished_at', ARGV[2],
    'terminal_kind', kind, 'terminal_seq', seq)
  -- An ended action is never sent: drop a message kept for direct enqueue.
  redis.call('HDEL', action_key, 'task_message', 'sent_event')
end

local appended = 1
end_action(KEYS[5], ARGV[8], ARGV[9], ARGV[10])
redis.call('DEL', KEYS[6])
if ARGV[11] ~= '' then
  redis.call('HINCRBY', KEYS[4], ARGV[11], 1)
end
if redis.call('HGET', KEYS[1], 'active') == ARGV[5] then
  redis.call('HSET', KEYS[1], 'active', '')
end
redis.call('LREM', KEYS[3], 0, ARGV[5])

if ARGV[12] == '1' then
  local template = cjson.decode(ARGV[13])
  for _, queued_id in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
    local action_key = ARGV[15] .. queued_id
    local q = redis.call('HMGET', action_key, 'state', 'tool', 'tool_call_id')
    if q[1] == 'pending' then
      template.id = ARGV[14] .. string.format('%012x', appended)
      template.tool_name = q[2]
      template.tool_call_id = q[3]
      template.action_id = queued_id
      end_action(action_key, 'errored', cjson.encode(template), 'AgentErrorEvent')
      appended = appended + 1
    end
  end
  redis.call('DEL', KEYS[3])
end
if set_status(KEYS[1], KEYS[2], ARGV[4], ARGV[3], ARGV[1]) ~= 0 then
  appended = appended + 1
  if ARGV[4] == 'error' then
    record_error(KEYS[1], ARGV[9])
  end
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[1])
return {'ok', appended}
