"""The worker's lease heartbeat, on a thread of its own.

The worker's main process records crashes, dispatches messages and sweeps,
all on one event loop; if any of that is slow (a Redis script over a long
queue, a burst of crashes), a heartbeat on that loop would stop, the lease
would expire, and other workers would error this worker's healthy actions.
So the lease is renewed by this thread, on its own Redis connection.

A thread proves only that the process exists, not that it makes progress, so
the event loop reports each tick (``loop_alive``); if it has not ticked for
``ACTIONQ_WORKER_STALL_SECONDS`` the thread stops renewing and the lease
expires as it would for a dead worker.

Pool children are forked from the main process while this thread runs. They
never touch its client, and logging re-creates its locks after a fork, so a
child never waits on a lock this thread held.
"""

from __future__ import annotations

import logging
import threading
import time

from actionq.errors import ActionqError
from actionq.store import ActionStore, WorkerIdentity

__all__ = ["LeaseHeartbeat", "stop_heartbeat"]

log = logging.getLogger(__name__)

# The heartbeat of this process, if one runs (the shutdown handler stops it
# before it releases the lease, so the lease is not renewed after release).
_running: LeaseHeartbeat | None = None


class LeaseHeartbeat:
    """Renews ``worker``'s lease every ``interval`` seconds while the event
    loop keeps ticking."""

    def __init__(
        self,
        store: ActionStore,
        worker: WorkerIdentity,
        *,
        lease_seconds: float,
        interval: float,
        stall_seconds: float,
    ) -> None:
        self.store = store
        self.worker = worker
        self.lease_seconds = lease_seconds
        self.interval = interval
        self.stall_seconds = stall_seconds
        self._loop_alive_at = time.monotonic()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="actionq-heartbeat", daemon=True)
        self._stalled = False
        self._drain_until: float | None = None

    def start(self) -> None:
        global _running
        _running = self
        self._thread.start()

    def loop_alive(self) -> None:
        """Called from the event loop on every tick of its timer."""
        self._loop_alive_at = time.monotonic()

    def drain(self, for_at_most: float) -> None:
        """The worker is shutting down and its event loop stops ticking while
        the pool finishes what it runs: keep the lease (without loop ticks) for
        up to ``for_at_most`` seconds, until ``stop``. Without this, another
        worker would error the actions a warm shutdown lets finish."""
        self._drain_until = time.monotonic() + for_at_most

    def stop(self, timeout: float = 5.0) -> None:
        """Stop renewing (before the lease is released at shutdown)."""
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def renew_once(self, now: float | None = None) -> bool:
        """Renew if the event loop ticked recently (``now``: ``time.monotonic()``).
        Returns whether it renewed."""
        now = time.monotonic() if now is None else now
        stalled_for = now - self._loop_alive_at
        draining = self._drain_until is not None and now < self._drain_until
        if stalled_for > self.stall_seconds and not draining:
            if not self._stalled:
                log.error(
                    "worker %s: event loop stalled for %.1fs; no longer renewing its lease",
                    self.worker.id,
                    stalled_for,
                )
            self._stalled = True
            return False
        if self._stalled:
            log.warning("worker %s: event loop ticking again; renewing", self.worker.id)
            self._stalled = False
        try:
            self.store.renew_worker_lease(self.worker, self.lease_seconds)
        except ActionqError as e:
            log.warning("could not renew worker lease: %s", e)
            return False
        return True

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            self.renew_once()


def stop_heartbeat() -> None:
    """Stop this process's heartbeat, if it has one."""
    if _running is not None:
        _running.stop()
