"""A worker bootstep: the lease heartbeat (a thread, ``actionq.tasks.heartbeat``,
so slow work on the event loop cannot let the lease expire) and three timers
on the worker's own event loop:

- tell the heartbeat the loop is alive (``ACTIONQ_HEARTBEAT_INTERVAL``);
- sweep the claims of workers whose lease expired (``ACTIONQ_SWEEP_INTERVAL``);
  (archival, when it is on, runs on a thread of its own every
  ``ACTIONQ_ARCHIVE_INTERVAL``: its sink's I/O never holds up the loop);
- reap dead pool children: at once on SIGCHLD (a self-pipe on the event
  loop), and every ``ACTIONQ_POOL_MAINTAIN_INTERVAL`` seconds as a safety net
  (each time noting which child runs which action, for the OOM watch).
  Celery notices a killed child through its sentinel pipe, but when the pipe
  closes before the child can be reaped only a hard-coded 5 s
  ``maintain_pool`` timer finds it; SIGCHLD arrives exactly when the child
  can be reaped, so the crash is reported within milliseconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable
from functools import partial
from typing import Any

from celery import bootsteps
from celery.worker import state as worker_state

from actionq.archive import ArchiveThread, archiver_from_settings
from actionq.crashes.sweep import Repairs, audit_own_claims, sweep_expired_leases
from actionq.errors import ActionqError
from actionq.messaging.dispatch import send_action, step_sender
from actionq.runtime import get_store
from actionq.settings import get_settings
from actionq.store import ActionStore
from actionq.tasks.heartbeat import LeaseHeartbeat
from actionq.tasks.identity import current_worker
from actionq.tasks.oom_watch import oom_watch
from actionq.tasks.signals import UNSETTLED_LOSSES

__all__ = ["ActionqWorkerStep"]

log = logging.getLogger(__name__)


class ActionqWorkerStep(bootsteps.StartStopStep):  # type: ignore[misc]
    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._timers: list[Any] = []
        self.repairs = Repairs(get_settings().turn_resend_seconds)
        self._sigchld_pipe: tuple[int, int] | None = None
        self.heartbeat: LeaseHeartbeat | None = None
        self.archive_thread: ArchiveThread | None = None
        self.app = worker.app

    def start(self, worker: Any) -> None:
        settings = get_settings()
        # Its own client (and connection pool): never waits behind the loop's work.
        store = ActionStore.from_url(settings.redis_url, settings.key_prefix)
        self.heartbeat = LeaseHeartbeat(
            store,
            current_worker(),
            lease_seconds=settings.worker_lease_seconds,
            interval=settings.heartbeat_interval,
            stall_seconds=settings.worker_stall_seconds,
        )
        self.heartbeat.start()
        archiver = archiver_from_settings(
            ActionStore.from_url(settings.redis_url, settings.key_prefix), settings
        )
        if archiver is not None:
            self.archive_thread = ArchiveThread(archiver, settings.archive_interval)
            self.archive_thread.start()

    def register_with_event_loop(self, worker: Any, hub: Any) -> None:
        # Called again after a broker reconnect (Celery's event loop cancels
        # the timers and readers of the lost connection, and so do we).
        self._cancel_timers()
        # Renew first: after an outage longer than the lease, the first sweep
        # must not find this very worker's lease lapsed and error the action
        # it is still running (that would be a ``lease_expired`` by itself).
        if self.heartbeat is not None:
            self.heartbeat.loop_alive()
            self.heartbeat.renew_once()
        settings = get_settings()
        self._timers = [
            hub.call_repeatedly(settings.heartbeat_interval, self.loop_alive),
            hub.call_repeatedly(settings.sweep_interval, self.sweep),
        ]
        maintain_pool = getattr(worker.pool, "maintain_pool", None)
        if maintain_pool is not None:

            def maintain() -> None:
                # Which child runs which action, noted while a child that just
                # died is still listed: its crash can then say whether the
                # kernel's OOM killer ended it (actionq.tasks.oom_watch).
                watch = oom_watch()
                if watch.enabled:
                    try:
                        watch.observe((r.id, r.worker_pid) for r in worker_state.active_requests)
                    except Exception:  # never in the way of reaping children
                        log.exception("OOM watch failed")
                maintain_pool()

            self._timers.append(hub.call_repeatedly(settings.pool_maintain_interval, maintain))
            self._watch_children(hub, maintain)

    def _watch_children(self, hub: Any, maintain: Callable[[], None]) -> None:
        """Call ``maintain`` from the event loop as soon as a child exits."""
        if self._sigchld_pipe is None:
            read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._sigchld_pipe = (read_fd, write_fd)

            def on_sigchld(signum: int, frame: object) -> None:
                with contextlib.suppress(BlockingIOError):
                    os.write(write_fd, b"\0")

            signal.signal(signal.SIGCHLD, on_sigchld)
        read_fd = self._sigchld_pipe[0]

        def on_readable() -> None:
            with contextlib.suppress(BlockingIOError):
                while os.read(read_fd, 512):
                    pass
            maintain()

        hub.add_reader(read_fd, on_readable)

    def stop(self, worker: Any) -> None:
        """Shutdown: the timers stop, but the lease is kept while the pool
        drains (running actions finish in a warm shutdown); the shutdown
        handler stops the heartbeat and releases the lease afterwards."""
        self._cancel_timers()
        if self.archive_thread is not None:
            self.archive_thread.stop()
            self.archive_thread = None
        if self.heartbeat is not None:
            self.heartbeat.drain(for_at_most=get_settings().action_time_limit + 30)

    terminate = stop  # a cold shutdown: the handler errors the cut-off claims, then stops it

    def _cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers = []

    def loop_alive(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.loop_alive()

    def sweep(self) -> None:
        """Other workers' expired leases, then this worker's own claims."""
        store = get_store()
        try:
            settings = get_settings()
            send_step = step_sender(self.app, settings)
            errored = sweep_expired_leases(
                store, step_attempts=settings.agent_step_attempts, send_step=send_step
            )
            # Before the audit: a child that died while Redis was away is
            # settled as what it was, not as ``abandoned``.
            for action_id, outcome in UNSETTLED_LOSSES.retry().items():
                log.info("lost delivery of action %s settled: %s", action_id, outcome)
            running = {request.id for request in worker_state.active_requests}
            running |= UNSETTLED_LOSSES.action_ids()  # not abandoned: still to settle
            # Read after ``running``: a cold shutdown's signal handler may run
            # in the middle of this sweep (while a Redis call waits); it takes
            # the requests it cuts off out of ``active_requests`` and then sets
            # ``should_terminate``. Their claims are the shutdown handler's to
            # settle (``worker_shutdown``), not ``abandoned``.
            abandoned: list[str] = []
            if worker_state.should_terminate is None:
                abandoned = audit_own_claims(
                    store,
                    current_worker(),
                    running,
                    step_attempts=settings.agent_step_attempts,
                    send_step=send_step,
                )
            self.repairs.run(store, partial(send_action, self.app, settings.queue), send_step)
        except ActionqError as e:
            log.warning("lease sweep failed: %s", e)
            return
        if errored:
            log.warning("lease sweep errored %d action(s) of dead workers", len(errored))
        if abandoned:
            log.warning("claim audit errored %d abandoned action(s)", len(abandoned))
