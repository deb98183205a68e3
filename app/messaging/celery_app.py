"""The Celery application. ``celery -A actionq worker`` finds it as ``actionq.celery``."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import Celery

from actionq.settings import Settings, get_settings
from actionq.store_url import parse_store_url

__all__ = [
    "AGENT_STEP_TASK",
    "RUN_ACTION_TASK",
    "WORKER_MODULES",
    "create_celery_app",
    "get_celery_app",
]

RUN_ACTION_TASK = "actionq.run_action"
AGENT_STEP_TASK = "actionq.agent_step"


def _sentinel_options(settings: Settings) -> dict[str, Any]:
    """kombu's sentinel transport finds the primary by name: the store's, when
    the broker is the store's Sentinel group (``effective_broker_url``)."""
    if not settings.effective_broker_url.startswith("sentinel://"):
        return {}
    address = parse_store_url(settings.redis_url)
    return {"master_name": address.primary_name} if address.topology == "sentinel" else {}


def _quorum_options(settings: Settings) -> dict[str, Any]:
    """Quorum queues keep a message on a majority of RabbitMQ's nodes; a
    publish then waits for the broker's confirm, so a sent turn is not lost
    with a broker node either."""
    if settings.broker_queue_type != "quorum":
        return {}
    return {"confirm_publish": True}


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.effective_broker_url,
        "broker_transport": settings.effective_broker_transport,
        # No result backend: outcomes live in the event log, not in Celery results.
        "result_backend": None,
        "task_ignore_result": True,
        # JSON only; a pickled message is refused before anything runs.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Ack after the action ended; a crash is reported, never requeued.
        "task_acks_late": True,
        "task_reject_on_worker_lost": False,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": settings.action_time_limit,
        "task_default_queue": settings.queue,
        "task_default_queue_type": settings.broker_queue_type,
        "task_create_missing_queue_type": settings.broker_queue_type,
        "task_routes": {AGENT_STEP_TASK: {"queue": settings.agent_queue}},
        # Task events on, so Flower shows every action.
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "broker_connection_retry_on_startup": True,
        # Reconnect to a lost broker forever (back-off 2, 4, ... 30 s), not 100
        # times: an outage of any length must not end the worker.
        "broker_connection_max_retries": None,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            "unacked_restore_interval": settings.unacked_restore_interval,
            # Scan on every interval, not every 10th (kombu's default means a
            # dead worker's message comes back ~100 s late at best).
            "unacked_restore_throttle": 1,
            **_sentinel_options(settings),
            **_quorum_options(settings),
        },
        "worker_hijack_root_logger": True,
    }


# Imported by a worker before it sends ``worker_init`` and builds its
# bootsteps: the task, then the worker-side wiring (signal handlers). Nothing
# else imports them, so a client, the API or the CLI connects no handler.
WORKER_MODULES = ("actionq.tasks.actions", "actionq.tasks.agent_step", "actionq.tasks.wiring")
WORKER_STEP = "actionq.tasks.worker_step:ActionqWorkerStep"


def create_celery_app(settings: Settings | None = None) -> Celery:
    """A Celery app with actionq's configuration. Building it connects nothing;
    the worker imports ``WORKER_MODULES`` and the bootstep by name."""
    settings = settings or get_settings()
    # amqp: kombu connections that survive the teardown of a lost broker
    # connection (``actionq.messaging.transport.BrokerConnection``).
    app = Celery(
        "actionq",
        include=list(WORKER_MODULES),
        amqp="actionq.messaging.transport:CeleryAMQP",
    )
    app.conf.update(celery_config(settings))
    # By name: resolved only when a worker builds its blueprint.
    app.steps["worker"].add(WORKER_STEP)
    return app


@lru_cache(maxsize=1)
def get_celery_app() -> Celery:
    """The process-wide app (``actionq.celery``, ``celery -A actionq``),
    built on first use from the environment's settings."""
    return create_celery_app()
