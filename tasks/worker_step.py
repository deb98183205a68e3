"""A worker bootstep that runs three timers on the worker's own event loop
(not a thread, so nothing is forked mid-lock):

- renew this worker's lease (``ACTIONQ_HEARTBEAT_INTERVAL``);
- sweep the claims of workers whose lease expired (``ACTIONQ_SWEEP_INTERVAL``);
- reap dead pool children every ``ACTIONQ_POOL_MAINTAIN_INTERVAL`` seconds.
  Celery notices a killed child through its sentinel pipe in ~20 ms, but when
  the pipe closes before the child can be reaped only a hard-coded 5 s
  ``maintain_pool`` timer finds it; this removes that 0-5 s tail.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from celery.worker import state as worker_state

from app.errors import ActionqError
from app.recovery import audit_own_claims, sweep_expired_leases
from app.runtime import get_store
from app.settings import get_settings
from tasks.identity import current_worker

__all__ = ["ActionqWorkerStep"]

log = logging.getLogger(__name__)


class ActionqWorkerStep(bootsteps.StartStopStep):  # type: ignore[misc]
    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._timers: list[Any] = []

    def register_with_event_loop(self, worker: Any, hub: Any) -> None:
        self._cancel_timers()  # called again after a broker reconnect
        settings = get_settings()
        self._timers = [
            hub.call_repeatedly(settings.heartbeat_interval, self.renew_lease),
            hub.call_repeatedly(settings.sweep_interval, self.sweep),
        ]
        maintain = getattr(worker.pool, "maintain_pool", None)
        if maintain is not None:
            self._timers.append(hub.call_repeatedly(settings.pool_maintain_interval, maintain))

    def stop(self, worker: Any) -> None:
        self._cancel_timers()

    def _cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers = []

    def renew_lease(self) -> None:
        try:
            get_store().renew_worker_lease(current_worker(), get_settings().worker_lease_seconds)
        except ActionqError as e:
            log.warning("could not renew worker lease: %s", e)

    def sweep(self) -> None:
        """Other workers' expired leases, then this worker's own claims."""
        store = get_store()
        try:
            errored = sweep_expired_leases(store)
            running = {request.id for request in worker_state.active_requests}
            abandoned = audit_own_claims(store, current_worker(), running)
        except ActionqError as e:
            log.warning("lease sweep failed: %s", e)
            return
        if errored:
            log.warning("lease sweep errored %d action(s) of dead workers", len(errored))
        if abandoned:
            log.warning("claim audit errored %d abandoned action(s)", len(abandoned))
