"""The Redis store: the only package that spells a key or talks to Redis.

- ``keys``: every key name (the Lua scripts get theirs through KEYS/ARGV).
- ``client``: the Redis client, the Lua scripts in ``lua/``, error translation.
- ``leases``: worker leases and claim indexes.
- ``actions``: ``ActionStore``, conversations, actions and events; each state
  change is one Lua script.
- ``records``: the plain records it returns; ``follow``: following a
  conversation's event stream (SSE).
"""

from actionq.store.actions import ActionStore
from actionq.store.records import (
    Claim,
    ClaimRefused,
    FinishResult,
    StopOutcome,
    SubmitResult,
    WorkerIdentity,
    fingerprint,
)

__all__ = [
    "ActionStore",
    "Claim",
    "ClaimRefused",
    "FinishResult",
    "StopOutcome",
    "SubmitResult",
    "WorkerIdentity",
    "fingerprint",
]
