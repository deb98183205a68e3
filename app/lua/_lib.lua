-- Shared helpers, prepended to every script when it is loaded (Redis Lua has
-- no include). They only touch keys passed in by the calling script.

-- Append an event to a conversation: next seq, stream entry id "<seq>-0".
local function append_event(conv_key, events_key, event_json)
  local seq = redis.call('HINCRBY', conv_key, 'last_seq', 1)
  redis.call('XADD', events_key, seq .. '-0', 'e', event_json)
  return seq
end

-- Change the conversation status; appends a ConversationStateUpdateEvent
-- when it actually changes. Returns the event's seq or 0.
local function set_status(conv_key, events_key, new_status, event_id, now_iso)
  local old = redis.call('HGET', conv_key, 'status')
  if old == new_status then
    return 0
  end
  redis.call('HSET', conv_key, 'status', new_status, 'updated_at', now_iso)
  local event = cjson.encode({
    kind = 'ConversationStateUpdateEvent', id = event_id, timestamp = now_iso,
    source = 'environment', key = 'execution_status', value = new_status,
  })
  return append_event(conv_key, events_key, event)
end

-- Make the head of the queue the active action. Returns its id or false.
local function dispatch_next(conv_key, queue_key)
  local next_id = redis.call('LPOP', queue_key)
  if next_id then
    redis.call('HSET', conv_key, 'active', next_id)
  end
  return next_id
end

-- Push the Celery message stored with an action (direct enqueue, see
-- app/direct_enqueue.py) onto the broker's list, publish its task-sent
-- event, and forget both. Returns 1 if there was a message, else 0 (the
-- caller sends it with Celery).
local function push_stored_message(action_key, broker_key, event_channel)
  local m = redis.call('HMGET', action_key, 'task_message', 'sent_event')
  if not m[1] then
    return 0
  end
  redis.call('LPUSH', broker_key, m[1])
  if m[2] and event_channel ~= '' then
    redis.call('PUBLISH', event_channel, m[2])
  end
  redis.call('HDEL', action_key, 'task_message', 'sent_event')
  return 1
end

-- The key of an action's hash, from its conversation's key (same hash tag).
local function action_key_of(conv_key, action_id)
  return string.sub(conv_key, 1, -5) .. 'action:' .. action_id
end
