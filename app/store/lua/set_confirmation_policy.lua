-- Set the confirmation policy of a conversation's agent, with a
-- ConversationStateUpdateEvent (key confirmation_policy), as OpenHands
-- records each change of its state: clients that cache the state follow it.
-- KEYS[1] conversation hash  KEYS[2] events  KEYS[3] agent hash
-- ARGV[1] policy JSON  ARGV[2] event id  ARGV[3] now (ISO)
-- Returns 'no_conversation' | 'no_agent' | 'ok'
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 'no_conversation'
end
if redis.call('HGET', KEYS[1], 'agent') ~= '1' then
  return 'no_agent'
end
redis.call('HSET', KEYS[3], 'policy', ARGV[1])
local event = cjson.encode({
  kind = 'ConversationStateUpdateEvent', id = ARGV[2], timestamp = ARGV[3],
  source = 'environment', key = 'confirmation_policy', value = cjson.decode(ARGV[1]),
})
append_event(KEYS[1], KEYS[2], event)
redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
return 'ok'
