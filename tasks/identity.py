"""The identity of this worker: set in the main process before the pool forks,
so every pool child inherits it and claims in its parent's name (the parent
holds the lease and reports the child's death)."""

from __future__ import annotations

import os
import socket
import uuid

from actionq.store import WorkerIdentity

__all__ = ["current_worker", "init_worker_identity"]

_worker: WorkerIdentity | None = None


def init_worker_identity(node_name: str | None = None) -> WorkerIdentity:
    global _worker
    host = socket.gethostname()
    name = node_name or f"worker@{host}"
    _worker = WorkerIdentity(
        id=f"{name}:{os.getpid()}:{uuid.uuid4().hex[:8]}", host=host, pid=os.getpid()
    )
    return _worker


def current_worker() -> WorkerIdentity:
    """This worker, or a one-off identity outside a worker (e.g. tests, eager mode)."""
    return _worker if _worker is not None else init_worker_identity()
