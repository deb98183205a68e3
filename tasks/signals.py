"""Celery signal handlers, one concern each, connected by ``connect_signal_handlers``.

Crash handlers run in the worker's **main** process: when a pool child dies,
Celery raises ``WorkerLostError`` there and fires ``task_failure`` there;
``Task.on_failure`` does not run. Each handler catches and logs its own errors,
so one failing handler never stops the others.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import signals
from celery.exceptions import TimeLimitExceeded
from celery.worker import state as worker_state

from actionq.crashes.lost_step import requeue_lost_step
from actionq.crashes.lost_task import UnsettledLosses, settle_lost_task
from actionq.crashes.stop import cancel_action
from actionq.crashes.sweep import audit_own_claims, recover_orphaned_actions
from actionq.errors import StoreUnavailableError
from actionq.messaging.celery_app import AGENT_STEP_TASK, RUN_ACTION_TASK, get_celery_app
from actionq.messaging.dispatch import send_action, step_sender
from actionq.models import ErrorCause
from actionq.runtime import get_store
from actionq.secrets import SecretBox
from actionq.settings import get_settings
from actionq.store import ActionStore, WorkerIdentity
from actionq.tasks.heartbeat import stop_heartbeat
from actionq.tasks.identity import current_worker, init_worker_identity
from actionq.tasks.oom_watch import oom_watch, start_oom_watch
from actionq.tools import load_tool_modules
from actionq.tools.sandbox import scrub_worker_environ

__all__ = ["connect_signal_handlers", "parse_worker_lost"]

log = logging.getLogger(__name__)

# This worker's lost deliveries that could not be settled while Redis was
# away; its periodic sweep (tasks/worker_step.py) settles them again.
UNSETTLED_LOSSES = UnsettledLosses()

_SIGNAL_RE = re.compile(r"signal (\d+)")
_EXITCODE_RE = re.compile(r"exitcode (-?\d+)")


def _logged(fn: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:
            log.exception("actionq signal handler %s failed", fn.__name__)

    return wrapper


def parse_worker_lost(message: str) -> tuple[int | None, int | None]:
    """(signal, exit code) from billiard's 'Worker exited prematurely: signal 9 (SIGKILL)'."""
    sig = _SIGNAL_RE.search(message)
    code = _EXITCODE_RE.search(message)
    return (int(sig.group(1)) if sig else None, int(code.group(1)) if code else None)


def _action_ids(args: Any, kwargs: Any) -> tuple[str, str] | None:
    args = list(args or ())
    kwargs = dict(kwargs or {})
    try:
        conversation_id = kwargs.get("conversation_id") or args[0]
        action_id = kwargs.get("action_id") or args[1]
    except IndexError:
        return None
    return str(conversation_id), str(action_id)


def on_worker_init(sender: Any = None, **_: Any) -> None:
    """Main process, before the pool forks: identity, lease, tools, recovery.

    A worker that cannot set these up must not take work: it exits.
    """
    try:
        _init_worker(sender)
    except Exception as e:
        log.critical("actionq worker cannot start: %s", e, exc_info=True)
        raise SystemExit(1) from e


def _consumed_queues(sender: Any) -> set[str]:
    """The queues this worker consumes (empty: unknown, i.e. Celery's default)."""
    return set(getattr(sender.app.amqp.queues, "consume_from", None) or {})


def _init_worker(sender: Any) -> None:
    settings = get_settings()
    consumed = _consumed_queues(sender)
    # Only a worker of agent steps alone may keep the secret key's setting:
    # one that consumes anything else (or Celery's default) may run tools.
    agent_only = bool(consumed) and consumed <= {settings.agent_queue}
    # After the settings are read; before the pool forks.
    dropped = scrub_worker_environ(runs_tools=not agent_only)
    if dropped:
        log.warning(
            "%s: dropped, this worker runs tools and only agent workers open sealed "
            "secrets (`actionq worker` starts tool workers without it)",
            ", ".join(dropped),
        )
    if agent_only and settings.secret_key_file:
        SecretBox.from_settings(settings)  # an unusable key file: say so now, do not start
    load_tool_modules(settings.tool_modules)
    worker = init_worker_identity(getattr(sender, "hostname", None))
    start_oom_watch()  # before the pool forks: OOM kills of its children are named
    store = get_store()
    _register_with_retries(store, worker, settings.worker_lease_seconds)
    log.info("actionq worker %s holds a %.1fs lease", worker.id, settings.worker_lease_seconds)
    # A cold shutdown sends no worker_shutdown signal; settle at exit instead.
    atexit.register(on_worker_shutdown)
    if settings.agent_queue in consumed:
        _preload_litellm()
    if settings.recover_on_start:
        dispatch = partial(send_action, sender.app, settings.queue)
        try:
            recovered = recover_orphaned_actions(
                store,
                dispatch,
                step_attempts=settings.agent_step_attempts,
                send_step=step_sender(sender.app, settings),
            )
        except StoreUnavailableError as e:  # the sweep will catch up
            log.warning("start-up recovery skipped: %s", e)
            return
        if recovered:
            log.warning("start-up recovery errored %d orphaned action(s)", len(recovered))


def _preload_litellm() -> None:
    """An agent worker imports litellm (seconds) in the background at start,
    so that the first step does not wait for it; without the [llm] extra,
    scripted agents still run."""

    def load() -> None:
        started = time.monotonic()
        try:
            from actionq.agent.llm import load_litellm

            load_litellm()
            log.info("litellm imported in %.1fs", time.monotonic() - started)
        except ImportError:
            log.info("litellm is not installed (pip install 'actionq[llm]'): scripted agents only")

    # Not a daemon: a worker stopped seconds after it started would end its
    # interpreter with this thread frozen inside the import, holding import
    # locks that finalization (a __del__ of litellm's half-built objects) may
    # need; an agent worker of `actionq up` once hung there at exit in CI.
    # As a normal thread, the exit waits for the import (seconds) instead.
    threading.Thread(target=load, name="actionq-litellm-import").start()


_STARTUP_RETRY_SECONDS = 120.0


def _register_with_retries(store: ActionStore, worker: WorkerIdentity, lease: float) -> None:
    """Redis may be restarting while the worker starts (as Celery does for its
    broker, wait for it rather than exit); give up after two minutes."""
    deadline = time.monotonic() + _STARTUP_RETRY_SECONDS
    delay = 0.2
    while True:
        try:
            store.register_worker(worker, lease)
            return
        except StoreUnavailableError as e:
            if time.monotonic() > deadline:
                raise
            log.warning("state store not reachable yet (%s); retrying in %.1fs", e, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


@_logged
def on_worker_process_init(**_: Any) -> None:
    """Pool child: SIGCHLD back to the default (the parent's handler would wake
    the parent whenever a tool's subprocess exits)."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


@_logged
def on_task_failure(
    sender: Any = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    args: Any = None,
    kwargs: Any = None,
    **_: Any,
) -> None:
    """A pool child died or hit the hard time limit: error the action, never
    requeue it. (An agent step on a prefork pool is queued again instead: a
    step is safe to repeat.)"""
    if getattr(sender, "name", None) == AGENT_STEP_TASK:
        _settle_lost_step(sender, exception, args, kwargs)
        return
    if getattr(sender, "name", None) != RUN_ACTION_TASK:
        return
    if isinstance(exception, TimeLimitExceeded):
        cause, how, sig, code = ErrorCause.TIME_LIMIT, f"hard time limit {exception}s", None, None
    elif isinstance(exception, WorkerLostError):
        sig, code = parse_worker_lost(str(exception))
        # During a cold shutdown the worker itself killed the child.
        shutting_down = worker_state.should_terminate is not None
        cause = ErrorCause.WORKER_SHUTDOWN if shutting_down else ErrorCause.WORKER_LOST
        how = str(exception)
    else:
        return  # run_action handles tool errors itself; anything else is a bug, logged by Celery
    ids = _action_ids(args, kwargs)
    if ids is None:
        log.error("task %s failed with %r but carries no action ids", task_id, exception)
        return
    killed_by = None
    if cause == ErrorCause.WORKER_LOST and sig == signal.SIGKILL:
        oom = oom_watch().oom_kill_of(ids[1])
        if oom is not None:
            killed_by = "oom_killer"
            how = (
                f"{how}; the kernel's OOM killer killed it (pid {oom.pid}, "
                f"{oom.rss_bytes / 2**20:.0f} MiB resident at the kill)"
            )
    settle = partial(
        settle_lost_task,
        get_store(),
        current_worker(),
        ids[0],
        ids[1],
        cause,
        partial(send_action, sender.app, get_settings().queue),
        how=how,
        signal=sig,
        exitcode=code,
        killed_by=killed_by,
    )
    outcome = UNSETTLED_LOSSES.settle(ids[1], settle)
    log.info("lost delivery of action %s settled: %s", ids[1], outcome)


def _settle_lost_step(sender: Any, exception: BaseException | None, args: Any, kwargs: Any) -> None:
    if not isinstance(exception, WorkerLostError | TimeLimitExceeded):
        return
    conversation_id = (kwargs or {}).get("conversation_id") or (list(args or ()) or [None])[0]
    if conversation_id is None:
        return
    settings = get_settings()
    requeue_lost_step(
        get_store(),
        str(conversation_id),
        current_worker().id,
        settings.agent_step_attempts,
        step_sender(sender.app, settings),
        str(exception),
    )


@_logged
def on_task_revoked(
    sender: Any = None, request: Any = None, terminated: bool = False, **_: Any
) -> None:
    """The user stopped the action (``revoke``, with or without terminate)."""
    if getattr(sender, "name", None) != RUN_ACTION_TASK or request is None:
        return
    ids = _action_ids(getattr(request, "args", None), getattr(request, "kwargs", None))
    if ids is not None:
        reason = "stopped by the user" + (" (process terminated)" if terminated else "")
        cancel_action(get_store(), ids[0], ids[1], reason)


@_logged
def on_worker_shutdown(**_: Any) -> None:
    """The worker's main process is exiting (warm shutdown: sent by Celery;
    cold shutdown: Celery sends nothing, so this also runs at exit). Actions
    it still holds were cut off: error them now (cause ``worker_shutdown``)
    rather than after the lease; then give up the lease."""
    worker = current_worker()
    if worker.pid != os.getpid():
        return  # a pool child inherited the atexit hook
    store = get_store()
    UNSETTLED_LOSSES.retry()  # crashes before the shutdown stay crashes
    audit_own_claims(
        store,
        worker,
        running_action_ids=set(),
        cause=ErrorCause.WORKER_SHUTDOWN,
        how="the worker shut down while it ran",
        min_age=0.0,
        step_attempts=get_settings().agent_step_attempts,
        send_step=step_sender(get_celery_app(), get_settings()),
    )
    stop_heartbeat()
    store.release_worker_lease(worker)


def connect_signal_handlers() -> None:
    """Connect every handler once (``weak=False``: they are module functions)."""
    signals.worker_init.connect(on_worker_init, weak=False, dispatch_uid="actionq.worker_init")
    signals.worker_process_init.connect(
        on_worker_process_init, weak=False, dispatch_uid="actionq.worker_process_init"
    )
    signals.task_failure.connect(on_task_failure, weak=False, dispatch_uid="actionq.task_failure")
    signals.task_revoked.connect(on_task_revoked, weak=False, dispatch_uid="actionq.task_revoked")
    signals.worker_shutdown.connect(
        on_worker_shutdown, weak=False, dispatch_uid="actionq.worker_shutdown"
    )
