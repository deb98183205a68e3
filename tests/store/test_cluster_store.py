"""The store's own promises on a Redis Cluster (tests/topology.py): the
per-status index (applied by the caller there) and archival, by the same
tests as on one server, run here on this module's settings. Each test has
its own key prefix on the module's cluster."""

from __future__ import annotations

import uuid

import pytest

from tests.store.test_archive import (
    pg_schema,
    sink,
    test_a_conversation_changed_between_export_and_removal_stays,
    test_old_conversations_are_archived_verified_and_removed_the_rest_untouched,
)
from tests.store.test_conversation_listing import (
    store,
    test_a_crash_is_kept_on_its_conversation_until_it_leaves_error,
    test_a_page_goes_on_after_its_last_row_leaves_the_index,
    test_backfill_indexes_conversations_older_than_the_index_once,
    test_pages_list_every_conversation_once_newest_first,
    test_the_agent_loops_transitions_keep_the_index_and_the_error,
    test_the_status_index_is_exact_through_every_transition,
)
from tests.topology import ValkeyCluster, valkey_cluster

# Collected here too, on a Cluster store.
__all__ = [
    "pg_schema",
    "sink",
    "store",
    "test_a_conversation_changed_between_export_and_removal_stays",
    "test_a_crash_is_kept_on_its_conversation_until_it_leaves_error",
    "test_a_page_goes_on_after_its_last_row_leaves_the_index",
    "test_backfill_indexes_conversations_older_than_the_index_once",
    "test_old_conversations_are_archived_verified_and_removed_the_rest_untouched",
    "test_pages_list_every_conversation_once_newest_first",
    "test_the_agent_loops_transitions_keep_the_index_and_the_error",
    "test_the_status_index_is_exact_through_every_transition",
    "valkey_cluster",
]


@pytest.fixture
def redis_url(valkey_cluster: ValkeyCluster) -> str:
    return valkey_cluster.url()


@pytest.fixture
def settings_env(settings_env: dict[str, str]) -> dict[str, str]:
    # No worker runs here; a Cluster store still needs a broker of its own.
    return settings_env | {
        "ACTIONQ_KEY_PREFIX": f"aq-cluster-{uuid.uuid4().hex[:10]}",
        "ACTIONQ_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
    }
