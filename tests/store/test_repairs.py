"""The sweeper's repairs against a real valkey: a lost turn is sent again,
by one of many sweepers per period, backing off."""

from __future__ import annotations

from datetime import datetime, timedelta

from actionq.crashes.sweep import Repairs, resend_lost_turns
from actionq.service import ActionQ


def test_of_many_sweepers_one_sends_a_lost_turn_per_period(aq: ActionQ) -> None:
    store = aq.store
    cid = aq.create_conversation().id
    # The store's own transition: running, its action pending, no message.
    action = store.submit_action(cid, "terminal", {"command": "true"}).action_id
    # The turn has waited 200 s: past the first re-send (60 s) and the second
    # (120 s), so only the turn each sweeper must take (a 30 s lease, held
    # through the three runs whatever the machine's load) keeps the others out.
    key = store.keys.conversation(cid)
    changed = datetime.fromisoformat(store.redis.hget(key, "updated_at"))
    store.redis.hset(key, "updated_at", (changed - timedelta(seconds=200)).isoformat())
    sent: list[tuple[str, str]] = []
    sweepers = [Repairs(turn_resend_seconds=60) for _ in range(3)]
    for sweeper in sweepers:
        sweeper.run(store, lambda c, a: sent.append((c, a)), None)
    assert sent == [(cid, action)]
    assert store.resends(cid, action) == 1


def test_a_turn_is_sent_again_after_twice_as_long_each_time(aq: ActionQ) -> None:
    store = aq.store
    cid = aq.create_conversation().id
    action = store.submit_action(cid, "terminal", {"command": "true"}).action_id
    changed = store.server_time()
    sent: list[str] = []

    def resend_at(seconds: float) -> list[str]:
        return resend_lost_turns(
            store, lambda c, a: sent.append(a), None, after_seconds=10, now=changed + seconds
        )

    assert resend_at(5) == []  # not yet waited 10 s
    assert resend_at(11) == [cid]
    assert resend_at(15) == []  # the second only after 20 s
    assert resend_at(21) == [cid]
    assert resend_at(39) == []  # the third after 40 s
    assert sent == [action, action]
