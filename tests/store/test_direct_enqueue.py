"""Direct enqueue: the store transition pushes the action's Celery message.

The messages must be exactly what Celery itself would send (a worker and
Flower read them), pushed once, at the action's turn, and the path must
fall back to ``send_task`` wherever it does not apply. Driven through the
store; the same run through a real worker: tests/worker/test_direct_enqueue_with_a_worker.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from actionq.crashes.stop import crash_action
from actionq.messaging.direct_enqueue import broker_list_for
from actionq.models import ActionState, ErrorCause, ObservationEvent
from actionq.service import ActionQ
from actionq.settings import Settings
from actionq.store import ActionStore, Claim, WorkerIdentity
from tests.events import celery_body

WORKER = WorkerIdentity(id="w@host:1:aaaa", host="host", pid=1)


def queued_messages(aq: ActionQ) -> list[dict[str, Any]]:
    """The Celery messages waiting in the broker's list, oldest first."""
    raw = aq.store.redis.lrange(aq.settings.queue, 0, -1)
    return [json.loads(m) for m in reversed(raw)]


class SentEvents:
    """``task-sent`` events as a Flower-like subscriber receives them."""

    def __init__(self, url: str, channel: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(channel)
        self.pubsub.get_message(timeout=1)  # the subscribe confirmation

    def next(self) -> dict[str, Any]:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=0.5)
            if message and message["type"] == "message":
                envelope = json.loads(message["data"])
                return envelope | {"body": celery_body(envelope)}
        raise TimeoutError("no task-sent event")

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


def test_pushed_message_and_event_match_what_send_task_sends(aq: ActionQ, redis_url: str) -> None:
    broker = aq.store.broker
    assert broker is not None and broker.sent_event_channel.endswith(".celeryev/task.sent")
    events = SentEvents(redis_url, broker.sent_event_channel)
    try:
        cid = aq.create_conversation().id
        aq.dispatch(cid, "celery-sent-id")  # Celery's own send_task
        [celery_message] = queued_messages(aq)
        celery_event = events.next()
        aq.store.redis.delete(aq.settings.queue)

        action = aq.submit_action(cid, "terminal", {"command": "true"})
        [pushed] = queued_messages(aq)
        pushed_event = events.next()
    finally:
        events.close()

    def same_but_ids(ours: Any, theirs: Any, ignore: frozenset[str] = frozenset()) -> None:
        assert set(ours) == set(theirs)
        for key, value in theirs.items():
            if key in ignore:
                continue
            if isinstance(value, str):
                value = value.replace("celery-sent-id", action.id)
            assert ours[key] == value, key

    same_but_ids(pushed, celery_message, frozenset({"body", "headers", "properties"}))
    same_but_ids(pushed["headers"], celery_message["headers"])
    same_but_ids(pushed["properties"], celery_message["properties"], frozenset({"delivery_tag"}))
    assert celery_body(pushed) == [[cid, action.id], {}, celery_body(celery_message)[2]]
    assert celery_body(celery_message)[0] == [cid, "celery-sent-id"]

    same_but_ids(pushed_event, celery_event, frozenset({"body", "properties"}))
    same_but_ids(
        pushed_event["properties"], celery_event["properties"], frozenset({"delivery_tag"})
    )
    same_but_ids(pushed_event["body"], celery_event["body"], frozenset({"clock", "timestamp"}))
    assert pushed_event["body"]["type"] == "task-sent"
    assert pushed_event["body"]["clock"] > celery_event["body"]["clock"]


def test_a_queued_action_is_pushed_by_the_finish_that_gives_it_its_turn(aq: ActionQ) -> None:
    store = aq.store
    cid = aq.create_conversation().id
    first = aq.submit_action(cid, "terminal", {"command": "true"})
    second = aq.submit_action(cid, "terminal", {"command": "false"})
    assert [m["headers"]["id"] for m in queued_messages(aq)] == [first.id]
    kept = store.redis.hget(store.keys.action(cid, second.id), "task_message")
    assert kept and json.loads(kept)["headers"]["id"] == second.id

    claim = store.claim_action(cid, first.id, WORKER)
    assert isinstance(claim, Claim)
    event = ObservationEvent(
        action_id=first.id, tool_call_id=claim.tool_call_id, tool_name="terminal", observation={}
    )
    finished = store.finish_action(claim, event, WORKER)
    assert finished.next_action_id == second.id and finished.pushed
    assert [m["headers"]["id"] for m in queued_messages(aq)] == [first.id, second.id]
    assert store.redis.hget(store.keys.action(cid, second.id), "task_message") is None


def test_actions_that_never_run_drop_their_kept_message(aq: ActionQ) -> None:
    store = aq.store
    cid = aq.create_conversation().id
    first = aq.submit_action(cid, "terminal", {"command": "true"})
    queued = aq.submit_action(cid, "terminal", {"command": "false"})
    claim = store.claim_action(cid, first.id, WORKER)
    assert isinstance(claim, Claim)
    crash_action(
        store, store.get_action(first.id, cid), ErrorCause.WORKER_LOST, expected_fence=claim.fence
    )
    ended = store.get_action(queued.id, cid)
    assert ended.state == ActionState.ERRORED and ended.terminal_kind == "AgentErrorEvent"
    assert store.redis.hget(store.keys.action(cid, queued.id), "task_message") is None
    assert [m["headers"]["id"] for m in queued_messages(aq)] == [first.id]  # nothing new sent


def test_resume_pushes_the_kept_message(aq: ActionQ) -> None:
    store = aq.store
    cid = aq.create_conversation().id
    aq.pause(cid)
    action = aq.submit_action(cid, "terminal", {"command": "true"})
    assert queued_messages(aq) == []  # paused: not its turn
    assert store.resume_conversation(cid) is None  # nothing left for send_task
    [message] = queued_messages(aq)  # pushed by the resume script, sent once
    assert message["headers"]["id"] == action.id
    claim = store.claim_action(cid, action.id, WORKER)
    assert isinstance(claim, Claim)
    assert store.redis.hget(store.keys.action(cid, action.id), "task_message") is None


def test_a_message_sent_by_celery_instead_is_dropped_at_the_claim(
    aq: ActionQ, settings: Settings
) -> None:
    """A worker without direct enqueue finishes the first action and sends the
    next one with send_task: the next one's kept message goes at its claim."""
    cid = aq.create_conversation().id
    first = aq.submit_action(cid, "terminal", {"command": "true"})
    second = aq.submit_action(cid, "terminal", {"command": "false"})
    plain = ActionStore.from_url(settings.redis_url, settings.key_prefix)  # no broker list
    try:
        claim = plain.claim_action(cid, first.id, WORKER)
        assert isinstance(claim, Claim)
        event = ObservationEvent(
            action_id=first.id, tool_call_id=claim.tool_call_id, tool_name="terminal",
            observation={},
        )  # fmt: skip
        finished = plain.finish_action(claim, event, WORKER)
        assert finished.next_action_id == second.id and not finished.pushed
        key = plain.keys.action(cid, second.id)
        assert plain.redis.hget(key, "task_message") is not None  # kept, not pushed
        assert isinstance(plain.claim_action(cid, second.id, WORKER), Claim)
        assert plain.redis.hget(key, "task_message") is None
    finally:
        plain.redis.close()


def test_other_brokers_and_the_setting_fall_back_to_send_task(redis_url: str) -> None:
    assert broker_list_for(Settings(redis_url=redis_url)) is not None
    assert broker_list_for(Settings(redis_url=redis_url, direct_enqueue=False)) is None
    amqp = Settings(redis_url=redis_url, broker_url="amqp://guest:guest@127.0.0.1:5672//")
    assert broker_list_for(amqp) is None
    base, db = redis_url.rsplit("/", 1)
    other_db = Settings(redis_url=redis_url, broker_url=f"{base}/{int(db) + 1}")
    assert broker_list_for(other_db) is None
    kombu_transport = Settings(redis_url=redis_url, broker_transport="redis")
    assert broker_list_for(kombu_transport) is not None
    no_events = broker_list_for(Settings(redis_url=redis_url, task_events=False))
    assert no_events is not None and no_events.sent_event_channel == ""
