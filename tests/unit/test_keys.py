"""Redis key names (actionq.store.keys.Keys): one conversation's keys share a
hash tag, so each Lua script touches one Redis Cluster slot; every key carries
the prefix; no two keys collide."""

from __future__ import annotations

import inspect

import pytest
from redis.crc import key_slot

from actionq.store.keys import Keys

PER_CONVERSATION = [
    "conversation",
    "events",
    "queue",
    "actions",
    "idempotency",
    "tool_calls",
    "crashes",
    "retries",
    "agent",
    "confirmations",
]
GLOBAL = ["conversation_index", "action_index", "status_index_version"]
PER_STATUS = ["status_index", "legacy_status_index"]
INDEX_SLOT = ["status_revisions"]
PER_WORKER = ["worker_info", "worker_claims"]
# Named periodic jobs' turns (archival).
PER_JOB = ["turn"]
WORKERS = ["worker_leases"]


def conversation_keys(keys: Keys, cid: str) -> list[str]:
    return [getattr(keys, name)(cid) for name in PER_CONVERSATION] + [
        keys.action(cid, "a1"),
        keys.action(cid, "a2"),
        keys.output_tail(cid, "a1"),
        keys.output_tail(cid, "a2"),
    ]


def every_key(keys: Keys) -> list[str]:
    return [
        *conversation_keys(keys, "c1"),
        *[getattr(keys, name)() for name in GLOBAL + WORKERS + INDEX_SLOT],
        *[getattr(keys, name)("w1") for name in PER_WORKER],
        *[getattr(keys, name)("archive") for name in PER_JOB],
        *[getattr(keys, name)(status) for name in PER_STATUS for status in ("idle", "error")],
    ]


def test_these_lists_name_every_key_method() -> None:
    """So a new key is checked here too."""
    methods = {
        name
        for name, member in inspect.getmembers(Keys, inspect.isfunction)
        if not name.startswith("_")
    }
    assert methods == {
        *PER_CONVERSATION, "action", "output_tail", *GLOBAL, *PER_WORKER, *WORKERS, *PER_STATUS,
        *INDEX_SLOT, *PER_JOB,
    }  # fmt: skip


@pytest.mark.parametrize("cid", ["c1", "0b9f0c3e-5d5e-4e1c-9a53-8a1b6b1b2a11", "conv.v2_x-1"])
def test_a_conversations_keys_share_its_hash_tag_and_slot(cid: str) -> None:
    keys = conversation_keys(Keys(), cid)
    assert all(f"{{{cid}}}" in key for key in keys)
    assert {key_slot(key.encode()) for key in keys} == {key_slot(cid.encode())}


def test_other_conversations_have_other_tags() -> None:
    one, other = conversation_keys(Keys(), "c1"), conversation_keys(Keys(), "c2")
    assert set(one).isdisjoint(other)
    assert all("{c2}" in key and "{c1}" not in key for key in other)


def test_a_workers_keys_share_one_slot_so_it_is_forgotten_at_once() -> None:
    keys = Keys()
    worker = [keys.worker_leases(), keys.worker_info("w1"), keys.worker_claims("w1")]
    worker += [keys.worker_info("w2"), keys.worker_claims("w2")]
    assert all("{workers}" in key for key in worker)
    assert len({key_slot(key.encode()) for key in worker}) == 1


def test_the_per_status_index_shares_the_main_index_slot() -> None:
    """So one script moves a conversation between statuses on Redis Cluster."""
    keys = Keys()
    index = [keys.conversation_index(), keys.status_revisions()]
    index += [keys.status_index(status) for status in ("idle", "running", "error")]
    assert len({key_slot(key.encode()) for key in index}) == 1


@pytest.mark.parametrize("prefix", ["a{b", "a}b"])
def test_a_prefix_with_a_brace_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="may not contain"):
        Keys(prefix)


@pytest.mark.parametrize("prefix", ["actionq", "tenant-a", "x"])
def test_every_key_starts_with_the_prefix_and_has_no_empty_part(prefix: str) -> None:
    keys = every_key(Keys(prefix))
    assert all(key.startswith(f"{prefix}:") for key in keys), keys
    assert not [key for key in keys if "::" in key or key.endswith(":")]


def test_the_default_prefix_is_actionq() -> None:
    assert Keys().events("c1") == "actionq:{c1}:events"
    assert Keys().action("c1", "a1") == "actionq:{c1}:action:a1"
    assert Keys().conversation_index() == "actionq:conversations"


def test_no_two_keys_collide() -> None:
    # A conversation called "workers" shares the workers' slot, but no key.
    keys = [*every_key(Keys()), *conversation_keys(Keys(), "workers")]
    assert len(set(keys)) == len(keys)


def test_two_prefixes_never_share_a_key() -> None:
    assert set(every_key(Keys("a"))).isdisjoint(every_key(Keys("b")))
