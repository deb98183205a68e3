-- Shared helpers, prepended to every script when it is loaded (Redis Lua has
-- no include). They only touch keys passed in by the calling script.

-- Append an event to a conversation: next seq, stream entry id "<seq>-0".
local function append_event(conv_key, events_key, event_json)
  local seq = redis.call('HINCRBY', conv_key, 'last_seq', 1)
  redis.call('XADD', events_key, seq .. '-0', 'e', event_json)
  return seq
end

-- CONVERSATION_INDEX, STATUS_INDEX_PREFIX, STATUS_REVISIONS, STATUSES and
-- INDEX_IN_SCRIPT come first, written by app/store/client.py from
-- app/store/keys.py, the status enum and the store's topology.

-- The per-status index move of this script, when the caller applies it
-- (Redis Cluster): {conversation id, revision, new status or ''}.
local INDEX_MOVE = false

-- Move a conversation from the per-status index of `old` (false: none) to
-- that of `new` (false: none, it is deleted), with the main index's score.
-- Each move has a revision, counted on the conversation, so a move applied
-- late (an older revision) cannot undo a newer one. On one Redis it is
-- written here, in the step that changes the status, so the index is never
-- stale; under Cluster its keys are on another slot, so the script returns
-- the move and the caller applies it with apply_status_moves.lua
-- (docs/design.md, "The per-status index").
local function reindex_status(conv_key, conversation_id, old, new)
  local revision = redis.call('HINCRBY', conv_key, 'status_rev', 1)
  if not INDEX_IN_SCRIPT then
    INDEX_MOVE = {conversation_id, revision, new or ''}
    return
  end
  if old then
    redis.call('ZREM', STATUS_INDEX_PREFIX .. old, conversation_id)
  end
  if new then
    local score = redis.call('ZSCORE', CONVERSATION_INDEX, conversation_id)
    if not score then
      -- Never expected (the main index is written first); keep it listed.
      score = redis.call('TIME')[1]
    end
    redis.call('ZADD', STATUS_INDEX_PREFIX .. new, score, conversation_id)
    redis.call('HSET', STATUS_REVISIONS, conversation_id, revision)
  else
    redis.call('HDEL', STATUS_REVISIONS, conversation_id)
  end
end

-- Change the conversation status; appends a ConversationStateUpdateEvent
-- when it actually changes. Returns the event's seq or 0.
local function set_status(conv_key, events_key, new_status, event_id, now_iso)
  local old = redis.call('HGET', conv_key, 'status')
  if old == new_status then
    return 0
  end
  redis.call('HSET', conv_key, 'status', new_status, 'updated_at', now_iso)
  reindex_status(conv_key, redis.call('HGET', conv_key, 'id'), old, new_status)
  if new_status ~= 'error' then
    -- The crash that put it in error (record_error) is over.
    redis.call('HDEL', conv_key, 'error')
  end
  -- An agent run goes on only while running (or waiting for the user's
  -- confirmation); any other status ends it, and only `run` starts another.
  if new_status ~= 'running' and new_status ~= 'waiting_for_confirmation' then
    redis.call('HSET', conv_key, 'agent_run', '')
  end
  local event = cjson.encode({
    kind = 'ConversationStateUpdateEvent', id = event_id, timestamp = now_iso,
    source = 'environment', key = 'execution_status', value = new_status,
  })
  return append_event(conv_key, events_key, event)
end

-- Keep on the conversation what put it in `error` (the console lists it):
-- the cause, signal and exit code of the event's detail (an AgentErrorEvent's
-- ErrorDetail; a ConversationErrorEvent has a `code` and no action), the
-- action id and the event's time, as the JSON field `error`.
local function record_error(conv_key, event_json)
  local event = cjson.decode(event_json)
  local detail = event.detail
  local cause, signal, exitcode = event.code, cjson.null, cjson.null
  if type(detail) == 'table' then
    cause = detail.cause or cause
    signal = detail.signal
    exitcode = detail.exitcode
  end
  redis.call('HSET', conv_key, 'error', cjson.encode({
    cause = cause or cjson.null, signal = signal or cjson.null,
    exitcode = exitcode or cjson.null, action_id = event.action_id or cjson.null,
    at = event.timestamp or cjson.null,
  }))
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
-- app/messaging/direct_enqueue.py) onto the broker's list, publish its task-sent
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

-- Store a new pending action: append its ActionEvent, record it, queue it;
-- if the conversation may run (its status is one of `runnable`) and nothing
-- is active, make the head of the queue active and set `running`. Under
-- direct enqueue (k.broker set) the active action's Celery message is pushed
-- here, and the new action's is kept in its hash until its turn.
-- k: conv, events, queue, actions, idempotency, tool_calls, action, broker
-- a: id, idempotency_key, tool_call_id, event, now, status_event_id, tool,
--    arguments, fingerprint, retry_of, action_key_prefix (app/store/keys.py:
--    an action's hash is it followed by the action id), message, channel,
--    sent_event
-- Returns seq, dispatched action id ('' = none), pushed (1 if its message
-- was pushed here, else 0).
local function add_action(k, a, runnable)
  local seq = append_event(k.conv, k.events, a.event)
  redis.call('HSET', k.action,
    'id', a.id, 'conversation_id', redis.call('HGET', k.conv, 'id'),
    'state', 'pending', 'tool', a.tool, 'arguments', a.arguments,
    'tool_call_id', a.tool_call_id, 'fingerprint', a.fingerprint, 'retry_of', a.retry_of,
    'created_at', a.now, 'event_seq', seq, 'attempt', 0, 'fence', 0)
  redis.call('RPUSH', k.actions, a.id)
  redis.call('HSET', k.tool_calls, a.tool_call_id, a.id)
  if a.idempotency_key ~= '' then
    redis.call('HSET', k.idempotency, a.idempotency_key, a.id)
  end
  redis.call('RPUSH', k.queue, a.id)

  local dispatched = ''
  local pushed = 0
  local status = redis.call('HGET', k.conv, 'status')
  local active = redis.call('HGET', k.conv, 'active')
  if runnable[status] and (not active or active == '') then
    dispatched = dispatch_next(k.conv, k.queue)
    set_status(k.conv, k.events, 'running', a.status_event_id, a.now)
  end
  if k.broker then
    if dispatched == a.id then
      redis.call('LPUSH', k.broker, a.message)
      if a.sent_event ~= '' then
        redis.call('PUBLISH', a.channel, a.sent_event)
      end
      pushed = 1
    else
      -- Kept until the action's turn comes (pushed and removed then).
      redis.call('HSET', k.action, 'task_message', a.message, 'sent_event', a.sent_event)
      if dispatched ~= '' then
        pushed = push_stored_message(a.action_key_prefix .. dispatched, k.broker, a.channel)
      end
    end
  end
  redis.call('HSET', k.conv, 'updated_at', a.now)
  return seq, dispatched, pushed
end

-- The keys and arguments of a new action, as submit_action and retry_action
-- receive them: KEYS[1..7] and ARGV[1..10], the action key prefix at
-- ARGV[prefix_arg], then (direct enqueue) the broker's list as
-- KEYS[broker_key] and its message at ARGV[message_arg..+2].
local function new_action_spec(broker_key, prefix_arg, message_arg)
  local k = {conv = KEYS[1], events = KEYS[2], queue = KEYS[3], actions = KEYS[4],
    idempotency = KEYS[5], tool_calls = KEYS[6], action = KEYS[7], broker = KEYS[broker_key]}
  local a = {id = ARGV[1], idempotency_key = ARGV[2], tool_call_id = ARGV[3],
    event = ARGV[4], now = ARGV[5], status_event_id = ARGV[6], tool = ARGV[7],
    arguments = ARGV[8], fingerprint = ARGV[9], retry_of = ARGV[10],
    action_key_prefix = ARGV[prefix_arg],
    message = ARGV[message_arg], channel = ARGV[message_arg + 1],
    sent_event = ARGV[message_arg + 2]}
  return k, a
end

-- Queue a step of the conversation's agent run (app/tasks/agent_step.py):
-- the next step number (or, with `same_step`, the current one again), state
-- 'queued', a fresh task id. Under direct enqueue (`step_broker` set) its
-- Celery message is pushed, made from the template kept in the agent hash
-- (app/messaging/direct_enqueue.py), so the step is queued and sent at once.
-- Returns the task id, and 1 if its message was pushed here else 0.
local function queue_step(conv_key, agent_key, step_broker, same_step)
  local step
  if same_step then
    step = redis.call('HGET', agent_key, 'step')
  else
    step = redis.call('HINCRBY', agent_key, 'step', 1)
    redis.call('HSET', agent_key, 'step_attempts', 0)
  end
  local sends = redis.call('HINCRBY', agent_key, 'step_sends', 1)
  local task_id = 'step-' .. redis.call('HGET', conv_key, 'id') .. '-' .. step .. '-' .. sends
  redis.call('HSET', agent_key, 'step_state', 'queued', 'step_task', task_id, 'step_owner', '')
  if step_broker then
    local template = redis.call('HGET', agent_key, 'step_message')
    if template and template ~= '' then
      local message = string.gsub(template, '@@TASK@@', function() return task_id end)
      redis.call('LPUSH', step_broker, message)
      return task_id, 1
    end
  end
  return task_id, 0
end

-- Start or continue an agent run (`run`, a message sent with run): status
-- running, iterations counted from 0. Work goes on where it stands: the
-- active action runs on; else the head of the queue is dispatched; else, for
-- an agent, a step in flight goes on or the next step is queued. A
-- conversation without an agent and nothing to run goes to idle.
-- k: conv, events, queue, agent, confirm, broker, step_broker
-- a: now, status_event_id, action_key_prefix, channel
-- Returns status, dispatched action id or '', pushed, step task id or '', step pushed
local function start_run(k, a)
  local is_agent = redis.call('HGET', k.conv, 'agent') == '1'
  local status = redis.call('HGET', k.conv, 'status')
  if status ~= 'waiting_for_confirmation' and redis.call('LLEN', k.confirm) > 0 then
    -- Calls recorded while paused still wait for the user: ask again.
    set_status(k.conv, k.events, 'waiting_for_confirmation', a.status_event_id, a.now)
    return 'waiting_for_confirmation', '', 0, '', 0
  end
  if status == 'waiting_for_confirmation' then
    -- Approval: the held calls run first, in their order.
    local held = redis.call('LRANGE', k.confirm, 0, -1)
    for i = #held, 1, -1 do
      redis.call('LPUSH', k.queue, held[i])
    end
    redis.call('DEL', k.confirm)
  end
  if is_agent then
    redis.call('HSET', k.conv, 'agent_run', '1', 'iteration', 0)
  end
  local dispatched, pushed, step_task, step_pushed = '', 0, '', 0
  local active = redis.call('HGET', k.conv, 'active') or ''
  local new_status = 'running'
  if active == '' then
    dispatched = dispatch_next(k.conv, k.queue) or ''
    if dispatched ~= '' then
      if k.broker then
        pushed = push_stored_message(a.action_key_prefix .. dispatched, k.broker, a.channel)
      end
    elseif is_agent then
      local state = redis.call('HGET', k.agent, 'step_state')
      if state ~= 'queued' and state ~= 'claimed' then
        step_task, step_pushed = queue_step(k.conv, k.agent, k.step_broker, state == 'dropped')
      end
    else
      new_status = 'idle'
    end
  end
  set_status(k.conv, k.events, new_status, a.status_event_id, a.now)
  if is_agent and new_status == 'running' then
    redis.call('HSET', k.conv, 'agent_run', '1')
  end
  return new_status, dispatched, pushed, step_task, step_pushed
end
