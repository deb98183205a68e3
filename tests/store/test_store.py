"""The store's transitions against a real Redis-compatible server.

Paths that need no crash (fencing, recovery of planted state, idempotency)
are driven directly through the store, with ``now`` passed in where leases
matter.
"""

from __future__ import annotations

import time

import pytest
import redis

from actionq.crashes.stop import crash_action
from actionq.crashes.sweep import recover_orphaned_actions, sweep_expired_leases
from actionq.errors import (
    ConversationNotFound,
    DuplicateToolCallId,
    InvalidArgumentsError,
    InvalidTransition,
)
from actionq.models import (
    ActionState,
    AgentErrorEvent,
    ConversationStatus,
    ErrorCause,
    ObservationEvent,
)
from actionq.service import ActionQ
from actionq.store import ActionStore, Claim, WorkerIdentity
from tests.events import assert_log_consistent, only_error, status_changes, terminal_events

DEAD = WorkerIdentity(id="dead@host:1:aaaa", host="host", pid=1)
ALIVE = WorkerIdentity(id="alive@host:2:bbbb", host="host", pid=2)


@pytest.fixture
def store(aq: ActionQ) -> ActionStore:
    return aq.store


def observation(claim: Claim, output: str = "ok") -> ObservationEvent:
    return ObservationEvent(
        action_id=claim.action_id,
        tool_call_id=claim.tool_call_id,
        tool_name=claim.tool,
        observation={"output": output},
    )


def claimed(store: ActionStore, cid: str, aid: str, worker: WorkerIdentity) -> Claim:
    claim = store.claim_action(cid, aid, worker)
    assert isinstance(claim, Claim), claim
    return claim


def test_a_conversation_id_that_is_not_one_folder_name_is_refused(aq: ActionQ) -> None:
    # It names the conversation's workspace folder: '..' or 'a/b' would leave the root.
    for bad in ("..", "../x", "a/b", "/etc", "-rf", "x\n", "x" * 129):
        with pytest.raises(InvalidArgumentsError, match="conversation id"):
            aq.create_conversation(bad)
    assert aq.store.count_conversations() == 0  # not even indexed
    assert aq.create_conversation("my-task.1").id == "my-task.1"


def test_submit_claim_finish_keeps_seq_contiguous_and_turns_in_order(aq: ActionQ) -> None:
    store = aq.store
    cid = store.create_conversation().id
    first = store.submit_action(cid, "terminal", {"command": "true"})
    second = store.submit_action(cid, "terminal", {"command": "false"})
    assert first.dispatch_action_id == first.action_id
    assert second.dispatch_action_id is None  # queued behind the first

    # The second may not run before its turn, even if a message for it arrives.
    refused = store.claim_action(cid, second.action_id, ALIVE)
    assert not isinstance(refused, Claim) and refused.reason == "not_dispatched"

    claim = claimed(store, cid, first.action_id, ALIVE)
    result = store.finish_action(claim, observation(claim), ALIVE)
    assert result.appended and result.next_action_id == second.action_id
    claim2 = claimed(store, cid, second.action_id, ALIVE)
    assert store.finish_action(claim2, observation(claim2), ALIVE).next_action_id is None

    assert store.get_conversation(cid).status == ConversationStatus.IDLE
    assert status_changes(aq, cid) == ["running", "idle"]
    events = store.all_events(cid)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.kind for e in events] == [
        "ActionEvent",
        "ConversationStateUpdateEvent",
        "ActionEvent",
        "ObservationEvent",
        "ObservationEvent",
        "ConversationStateUpdateEvent",
    ]


def test_late_completion_with_stale_fence_appends_nothing(store: ActionStore) -> None:
    cid = store.create_conversation().id
    aid = store.submit_action(cid, "terminal", {"command": "sleep 100"}).action_id
    zombie = claimed(store, cid, aid, DEAD)
    assert crash_action(
        store, store.get_action(aid, cid), ErrorCause.LEASE_EXPIRED, expected_fence=zombie.fence
    )
    before = store.all_events(cid)

    late = store.finish_action(zombie, observation(zombie, "late result"), DEAD)

    assert not late.appended
    assert store.all_events(cid) == before
    assert store.get_action(aid, cid).state == ActionState.ERRORED
    assert store.get_conversation(cid).status == ConversationStatus.ERROR


def test_crash_handling_is_idempotent(store: ActionStore) -> None:
    cid = store.create_conversation().id
    aid = store.submit_action(cid, "terminal", {"command": "x"}).action_id
    claimed(store, cid, aid, ALIVE)
    assert crash_action(store, store.get_action(aid, cid), ErrorCause.TIME_LIMIT)
    events = store.all_events(cid)
    # Celery can fire task_failure twice for one time limit (and WorkerLostError after it).
    assert not crash_action(store, store.get_action(aid, cid), ErrorCause.TIME_LIMIT)
    assert not crash_action(store, store.get_action(aid, cid), ErrorCause.WORKER_LOST, signal=9)
    assert store.all_events(cid) == events
    assert store.crash_count(cid, store.get_action(aid, cid).fingerprint) == 1


def test_signal_handler_twice_writes_one_error(
    aq: ActionQ, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real task_failure handler, called twice as Celery may do."""
    from billiard.exceptions import WorkerLostError

    from actionq.messaging.celery_app import RUN_ACTION_TASK
    from actionq.tasks import signals

    monkeypatch.setattr(signals, "get_store", lambda: aq.store)
    monkeypatch.setattr(signals, "current_worker", lambda: ALIVE)
    cid = aq.store.create_conversation().id
    aid = aq.store.submit_action(cid, "terminal", {"command": "x"}).action_id
    claimed(aq.store, cid, aid, ALIVE)

    class Sender:
        name = RUN_ACTION_TASK
        app = aq.celery_app

    lost = WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL) Job: 3.")
    for _ in range(2):
        signals.on_task_failure(sender=Sender(), task_id=aid, exception=lost, args=[cid, aid])

    error = only_error(aq, cid, aid)
    assert (error.detail.cause, error.detail.signal) == (ErrorCause.WORKER_LOST, 9)
    assert aq.store.get_conversation(cid).status == ConversationStatus.ERROR


def test_recovery_errors_every_unmatched_action_not_only_the_newest(aq: ActionQ) -> None:
    """The seed's scenario: left RUNNING, two unmatched actions, no live worker."""
    store = aq.store
    cid = store.create_conversation().id
    first = store.submit_action(cid, "terminal", {"command": "leak-memory"}).action_id
    second = store.submit_action(cid, "terminal", {"command": "echo next"}).action_id
    store.register_worker(DEAD, lease_seconds=1)
    claimed(store, cid, first, DEAD)
    assert store.get_conversation(cid).status == ConversationStatus.RUNNING
    dispatched: list[tuple[str, str]] = []

    later = store.server_time() + 5  # the dead worker's 1 s lease has expired by then
    errored = recover_orphaned_actions(store, lambda c, a: dispatched.append((c, a)), now=later)

    assert errored == [first]
    assert only_error(aq, cid, first).detail.cause == ErrorCause.LEASE_EXPIRED
    assert only_error(aq, cid, second).detail.cause == ErrorCause.NOT_RUN
    assert store.get_conversation(cid).status == ConversationStatus.ERROR
    assert store.get_conversation(cid).active_action_id is None
    assert dispatched == []
    assert_log_consistent(aq, cid)


def test_recovery_leaves_live_workers_alone(aq: ActionQ) -> None:
    store = aq.store
    cid = store.create_conversation().id
    aid = store.submit_action(cid, "terminal", {"command": "sleep 5"}).action_id
    store.register_worker(ALIVE, lease_seconds=60)
    claimed(store, cid, aid, ALIVE)

    assert recover_orphaned_actions(store, lambda c, a: None) == []
    assert store.get_action(aid, cid).state == ActionState.CLAIMED
    assert store.get_conversation(cid).status == ConversationStatus.RUNNING


def test_sweep_errors_claims_of_expired_leases_only(aq: ActionQ) -> None:
    store = aq.store
    dead_cid = store.create_conversation().id
    live_cid = store.create_conversation().id
    dead_aid = store.submit_action(dead_cid, "terminal", {"command": "a"}).action_id
    behind = store.submit_action(dead_cid, "terminal", {"command": "queued"}).action_id
    live_aid = store.submit_action(live_cid, "terminal", {"command": "b"}).action_id
    store.register_worker(DEAD, lease_seconds=1)
    store.register_worker(ALIVE, lease_seconds=600)
    claimed(store, dead_cid, dead_aid, DEAD)
    claimed(store, live_cid, live_aid, ALIVE)

    now = store.server_time()
    assert sweep_expired_leases(store, now=now) == []  # nothing has expired yet
    assert sweep_expired_leases(store, now=now + 10) == [dead_aid]
    assert sweep_expired_leases(store, now=now + 10) == []  # idempotent

    assert only_error(aq, dead_cid, dead_aid).detail.cause == ErrorCause.LEASE_EXPIRED
    assert only_error(aq, dead_cid, behind).detail.cause == ErrorCause.NOT_RUN
    assert store.get_conversation(dead_cid).status == ConversationStatus.ERROR
    assert store.get_action(live_aid, live_cid).state == ActionState.CLAIMED
    assert DEAD.id not in store.expired_worker_ids(now + 10)  # forgotten once settled


def test_idempotency_key_returns_the_existing_action(store: ActionStore) -> None:
    cid = store.create_conversation().id
    first = store.submit_action(cid, "terminal", {"command": "date"}, idempotency_key="k1")
    again = store.submit_action(cid, "terminal", {"command": "date"}, idempotency_key="k1")
    assert (again.action_id, again.created, again.dispatch_action_id) == (
        first.action_id,
        False,
        None,
    )
    assert len(store.list_action_ids(cid)) == 1
    assert [e.kind for e in store.all_events(cid)].count("ActionEvent") == 1


def test_tool_call_id_is_unique_per_conversation(store: ActionStore) -> None:
    cid = store.create_conversation().id
    store.submit_action(cid, "terminal", {"command": "a"}, tool_call_id="call_1")
    with pytest.raises(DuplicateToolCallId):
        store.submit_action(cid, "terminal", {"command": "b"}, tool_call_id="call_1")
    assert len(store.list_action_ids(cid)) == 1


def test_submit_to_unknown_conversation_is_refused(store: ActionStore) -> None:
    with pytest.raises(ConversationNotFound):
        store.submit_action("nope", "terminal", {"command": "a"})


def test_error_holds_the_conversation_until_resume(store: ActionStore) -> None:
    cid = store.create_conversation().id
    crashed = store.submit_action(cid, "terminal", {"command": "a"}).action_id
    claimed(store, cid, crashed, ALIVE)
    crash_action(store, store.get_action(crashed, cid), ErrorCause.WORKER_LOST, signal=9)

    held = store.submit_action(cid, "terminal", {"command": "b"})
    assert held.dispatch_action_id is None  # nothing runs in a conversation in error
    assert store.resume_conversation(cid) == held.action_id
    assert store.get_conversation(cid).status == ConversationStatus.RUNNING
    with pytest.raises(InvalidTransition):
        store.resume_conversation(cid)
    # The crashed action stays errored; resume re-ran nothing.
    assert store.get_action(crashed, cid).state == ActionState.ERRORED


def test_only_known_keys_remain_after_a_run(store: ActionStore, redis_url: str) -> None:
    cid = store.create_conversation().id
    aid = store.submit_action(cid, "terminal", {"command": "a"}).action_id
    store.register_worker(ALIVE, lease_seconds=60)
    claim = claimed(store, cid, aid, ALIVE)
    store.finish_action(claim, observation(claim), ALIVE)

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = sorted(client.keys("*"))
    client.close()
    k = store.keys
    assert keys == sorted(
        [
            k.conversation(cid),
            k.events(cid),
            k.actions(cid),
            k.tool_calls(cid),
            k.action(cid, aid),
            k.conversation_index(),
            k.status_index("idle"),
            k.status_revisions(),
            k.action_index(),
            k.worker_leases(),
            k.worker_info(ALIVE.id),
        ]
    )  # no claim index left behind, no queue, no stray lock


def test_agent_error_event_round_trips(aq: ActionQ) -> None:
    store = aq.store
    cid = store.create_conversation().id
    aid = store.submit_action(cid, "terminal", {"command": "a", "list": []}).action_id
    claimed(store, cid, aid, ALIVE)
    crash_action(store, store.get_action(aid, cid), ErrorCause.WORKER_LOST, signal=9, exitcode=None)
    events = store.all_events(cid)
    error = next(e for e in events if isinstance(e, AgentErrorEvent))
    assert error.detail.host == "host" and error.detail.pid == 2 and error.detail.attempt == 1
    assert error.detail.runtime_s is not None
    assert events[0].action == {"command": "a", "list": []}  # type: ignore[union-attr]
    assert len(terminal_events(aq, cid, aid)) == 1


def test_lost_delivery_of_an_action_running_elsewhere_errors_nothing(aq: ActionQ) -> None:
    """A redelivered message's process dies on worker B while the action runs on A."""
    from actionq.crashes.lost_task import settle_lost_task

    store = aq.store
    cid = store.create_conversation().id
    aid = store.submit_action(cid, "terminal", {"command": "long"}).action_id
    claimed(store, cid, aid, ALIVE)
    other = WorkerIdentity(id="b@host:3:cccc", host="host", pid=3)
    sent: list[str] = []
    outcome = settle_lost_task(
        store, other, cid, aid, ErrorCause.WORKER_LOST, lambda c, a: sent.append(a)
    )
    assert outcome == "already settled" and sent == []
    assert store.get_action(aid, cid).state == ActionState.CLAIMED


def test_delivery_lost_before_claim_is_sent_again_then_errored(aq: ActionQ) -> None:
    from actionq.crashes.lost_task import MAX_LOST_BEFORE_CLAIM, settle_lost_task

    store = aq.store
    cid = store.create_conversation().id
    aid = store.submit_action(cid, "terminal", {"command": "x"}).action_id
    sent: list[str] = []

    def record(conversation_id: str, action_id: str) -> None:
        sent.append(action_id)

    outcomes = [
        settle_lost_task(
            store, ALIVE, cid, aid, ErrorCause.WORKER_LOST, lambda c, a: sent.append(a)
        )
        for _ in range(MAX_LOST_BEFORE_CLAIM)
    ]
    assert outcomes == ["sent again"] * (MAX_LOST_BEFORE_CLAIM - 1) + ["errored"]
    assert sent == [aid] * (MAX_LOST_BEFORE_CLAIM - 1)
    assert only_error(aq, cid, aid).detail.cause == ErrorCause.WORKER_LOST


def test_child_dying_after_finish_sends_the_next_action(aq: ActionQ) -> None:
    from actionq.crashes.lost_task import settle_lost_task

    store = aq.store
    cid = store.create_conversation().id
    first = store.submit_action(cid, "terminal", {"command": "a"}).action_id
    second = store.submit_action(cid, "terminal", {"command": "b"}).action_id
    claim = claimed(store, cid, first, ALIVE)
    assert store.finish_action(claim, observation(claim), ALIVE).next_action_id == second
    # ... and the child dies before it sends the message for `second`.
    sent: list[str] = []
    outcome = settle_lost_task(
        store, ALIVE, cid, first, ErrorCause.WORKER_LOST, lambda c, a: sent.append(a)
    )
    assert (outcome, sent) == ("sent the next action", [second])
    assert store.get_conversation(cid).status == ConversationStatus.RUNNING


def test_claim_audit_errors_only_abandoned_claims(aq: ActionQ) -> None:
    from actionq.crashes.sweep import audit_own_claims

    store = aq.store
    abandoned_cid = store.create_conversation().id
    running_cid = store.create_conversation().id
    abandoned = store.submit_action(abandoned_cid, "terminal", {"command": "a"}).action_id
    running = store.submit_action(running_cid, "terminal", {"command": "b"}).action_id
    claimed(store, abandoned_cid, abandoned, ALIVE)
    claimed(store, running_cid, running, ALIVE)

    now = store.server_time()
    assert audit_own_claims(store, ALIVE, {running}, now=now) == []  # too fresh to judge
    assert audit_own_claims(store, ALIVE, {running}, now=now + 30) == [abandoned]
    assert only_error(aq, abandoned_cid, abandoned).detail.cause == ErrorCause.ABANDONED
    assert store.get_action(running, running_cid).state == ActionState.CLAIMED
    assert store.worker_claim_refs(ALIVE.id) == [(running_cid, running)]


def test_a_second_delivery_to_the_owner_keeps_its_claim_auditable(aq: ActionQ) -> None:
    """The broker hands a running action's message to the worker that holds
    it (after a Redis outage): the refused claim must not drop the owner's
    claim index entry, or the claim audit never ends the action."""
    from actionq.crashes.sweep import audit_own_claims

    store = aq.store
    cid = store.create_conversation().id
    aid = store.submit_action(cid, "terminal", {"command": "a"}).action_id
    claimed(store, cid, aid, ALIVE)
    refused = store.claim_action(cid, aid, ALIVE)
    assert not isinstance(refused, Claim) and refused.owner == ALIVE.id
    assert store.worker_claim_refs(ALIVE.id) == [(cid, aid)]

    # Another worker's refused delivery drops only its own (new) entry.
    assert not isinstance(store.claim_action(cid, aid, DEAD), Claim)
    assert store.worker_claim_refs(DEAD.id) == []

    # The task that held it ended without recording an outcome: the audit errors it.
    assert audit_own_claims(store, ALIVE, set(), now=store.server_time() + 30) == [aid]
    assert only_error(aq, cid, aid).detail.cause == ErrorCause.ABANDONED


def test_pause_does_not_cancel_an_action_claimed_meanwhile(aq: ActionQ) -> None:
    from actionq.crashes.stop import cancel_action

    store = aq.store
    cid = store.create_conversation().id
    aid = store.submit_action(cid, "terminal", {"command": "a"}).action_id
    claimed(store, cid, aid, ALIVE)
    assert not cancel_action(store, cid, aid, "stop", only_if_pending=True)
    assert store.get_action(aid, cid).state == ActionState.CLAIMED


def test_heartbeat_renews_only_while_the_event_loop_ticks(store: ActionStore) -> None:
    """The lease thread keeps a busy worker alive, but not a wedged one."""
    from actionq.tasks.heartbeat import LeaseHeartbeat

    worker = WorkerIdentity(id="w@host:1:beat", host="host", pid=1)
    heartbeat = LeaseHeartbeat(store, worker, lease_seconds=3, interval=0.5, stall_seconds=10)
    heartbeat.loop_alive()
    assert heartbeat.renew_once()
    assert store.is_worker_alive(worker.id)

    now = time.monotonic()
    assert heartbeat.renew_once(now + 9)  # the loop is slow, not stalled: renewed
    assert not heartbeat.renew_once(now + 11)  # stalled past the limit: the lease lapses
    expiry = store.lease_expiry(worker.id)
    assert expiry is not None
    assert not store.is_worker_alive(worker.id, now=expiry + 0.1)
    heartbeat.loop_alive()
    assert heartbeat.renew_once()  # ticking again: renewed again

    # Shutting down, the loop stops ticking while the pool drains: renewed
    # until the drain's deadline, not after.
    heartbeat.drain(for_at_most=60)
    now = time.monotonic()
    assert heartbeat.renew_once(now + 30)
    assert not heartbeat.renew_once(now + 61)
