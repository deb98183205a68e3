"""actionq's Redis transport (``app/messaging/transport.py``) with a real worker:
acks and task events sent without waiting for replies still all arrive."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import redis

from actionq.messaging.transport import UnansweredCommands
from actionq.models import ActionState, ConversationStatus
from actionq.service import ActionQ
from actionq.settings import Settings
from tests.conftest import WorkerFactory
from tests.events import celery_body, count_lines, terminal_events
from tests.helpers import wait_for

EXPECTED_KINDS = ["task-received", "task-sent", "task-started", "task-succeeded"]


def _kinds_by_task(pubsub: redis.client.PubSub, ids: list[str]) -> dict[str, list[str]]:
    """The task events received for ``ids`` (batches of ``task.multi`` unpacked),
    read until each has all four kinds or 10 s have passed."""
    kinds: dict[str, list[str]] = {task_id: [] for task_id in ids}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if all(sorted(k) == EXPECTED_KINDS for k in kinds.values()):
            break
        message = pubsub.get_message(timeout=0.2)
        if not message or message["type"] != "pmessage":
            continue
        body = celery_body(json.loads(message["data"]))
        for event in body if isinstance(body, list) else [body]:
            if event.get("uuid") in kinds:
                kinds[event["uuid"]].append(event["type"])
    return {task_id: sorted(k) for task_id, k in kinds.items()}


def test_every_ack_and_task_event_arrives(
    aq: ActionQ, start_worker: WorkerFactory, redis_url: str
) -> None:
    listener = redis.Redis.from_url(redis_url)
    pubsub = listener.pubsub()
    db = redis_url.rsplit("/", 1)[1]
    pubsub.psubscribe(f"/{db}.celeryev/task.*")
    try:
        start_worker(concurrency=2)
        actions = [
            aq.submit_action(aq.create_conversation().id, "terminal", {"command": "true"})
            for _ in range(6)
        ]
        for action in actions:
            assert aq.wait_for_action(action.id, 30).state == ActionState.DONE
        # Acks are not waited for: they land a moment after the task ends.
        wait_for(
            lambda: listener.hlen("unacked") == 0 and listener.zcard("unacked_index") == 0,
            10,
            what="kombu's unacked set to empty",
        )
        kinds = _kinds_by_task(pubsub, [action.id for action in actions])
    finally:
        pubsub.close()
        listener.close()
    for action in actions:
        assert kinds[action.id] == EXPECTED_KINDS, kinds[action.id]


def test_a_message_whose_ack_was_lost_runs_nothing_when_it_comes_back(
    aq: ActionQ, start_worker: WorkerFactory, workdir: Path
) -> None:
    """Why acks may go unanswered: a lost ack only brings the message back
    (kombu restores it from the unacked set), and the claim refuses it."""
    start_worker()
    marker = workdir / "ran.txt"
    cid = aq.create_conversation().id
    action = aq.submit_action(cid, "terminal", {"command": f"echo ran >> {marker}"})
    assert aq.wait_for_action(action.id, 30).state == ActionState.DONE

    aq.dispatch(cid, action.id)  # the same task again, as a restored message arrives
    wait_for(lambda: aq.get_action(action.id).attempt == 2, 30, what="the second delivery")
    wait_for(lambda: aq.store.redis.hlen("unacked") == 0, 10, what="its ack")
    assert count_lines(marker) == 1
    assert len(terminal_events(aq, cid, action.id)) == 1
    assert aq.get_conversation(cid).status == ConversationStatus.IDLE


def test_unanswered_commands_reconnect_after_the_connection_drops(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    unanswered = UnansweredCommands(redis.ConnectionPool.from_url(redis_url))
    try:
        unanswered.send(("SET", "transport-test", "1"))
        wait_for(lambda: client.get("transport-test") == "1", 5, what="the first SET")
        client.client_kill_filter(_type="normal", skipme=True)  # drops the unanswered connection

        def send_again() -> bool:
            # The first send after the kill may vanish into the dead socket or
            # raise; either way a later one goes through on a new connection.
            with contextlib.suppress(redis.ConnectionError, OSError):
                unanswered.send(("SET", "transport-test", "2"))
            return client.get("transport-test") == "2"

        wait_for(send_again, 10, 0.1, "a SET on a new connection")
    finally:
        unanswered.close()
        client.close()


def test_kombus_own_transport_can_be_chosen(redis_url: str) -> None:
    assert Settings(redis_url=redis_url).effective_broker_transport == (
        "actionq.messaging.transport:Transport"
    )
    assert Settings(redis_url=redis_url, broker_transport="redis").effective_broker_transport == (
        "redis"
    )
    amqp = Settings(redis_url=redis_url, broker_url="amqp://guest:guest@127.0.0.1:5672//")
    assert amqp.effective_broker_transport is None
