"""The Celery application. ``celery -A app worker`` finds it as ``app.celery``."""

from __future__ import annotations

from typing import Any

from celery import Celery

from app.settings import Settings, get_settings

__all__ = ["RUN_ACTION_TASK", "celery_app", "create_celery_app"]

RUN_ACTION_TASK = "actionq.run_action"


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
        },
        "worker_hijack_root_logger": True,
    }


def create_celery_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    # amqp: kombu connections that survive the teardown of a lost broker
    # connection (app/broker_transport.py, BrokerConnection).
    app = Celery("actionq", include=["tasks.actions"], amqp="app.broker_transport:CeleryAMQP")
    app.conf.update(celery_config(settings))

    # Worker-side wiring, explicit: signal handlers and the lease/sweep bootstep.
    from tasks.signals import connect_signal_handlers
    from tasks.worker_step import ActionqWorkerStep

    connect_signal_handlers()
    app.steps["worker"].add(ActionqWorkerStep)
    return app


celery_app = create_celery_app()
