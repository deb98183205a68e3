"""Process-wide shared objects, created on first use."""

from __future__ import annotations

from functools import lru_cache

from actionq.messaging.direct_enqueue import broker_list_for
from actionq.settings import get_settings
from actionq.store import ActionStore

__all__ = ["get_store"]


@lru_cache(maxsize=1)
def get_store() -> ActionStore:
    """The store for this process (redis-py re-creates connections after fork)."""
    settings = get_settings()
    return ActionStore.from_settings(settings, broker_list_for(settings))
