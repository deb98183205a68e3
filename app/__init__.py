"""actionq: every tool call of an AI agent is a durable Celery job.

``celery -A app worker`` finds the Celery application as ``app.celery``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.service import ActionQ

if TYPE_CHECKING:
    from celery import Celery

    celery: Celery

__all__ = ["ActionQ", "celery"]


def __getattr__(name: str) -> Any:
    # The Celery app reads the settings, so it is built on first use, not on
    # import: `actionq --help` must work even while a setting is wrong.
    if name == "celery":
        from app.celery_app import celery_app

        return celery_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
