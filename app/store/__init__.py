"""The Redis store: the only package that spells one of actionq's keys or
reads and writes its state in Redis (the broker's keys are kombu's, reached
through ``actionq.messaging``).

- ``keys``: every key name (the Lua scripts get theirs through KEYS/ARGV).
- ``client``: the Redis client, the Lua scripts in ``lua/``, error translation.
- ``leases``: worker leases and claim indexes.
- ``actions``: ``ActionStore``, conversations, actions and events; each state
  change is one Lua script.
- ``agent``: the agent loop's messages, runs, steps and confirmations.
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
