"""actionq: every tool call of an AI agent is a durable Celery job.

``celery -A app worker`` finds the Celery application as ``app.celery``.
"""

from app.celery_app import celery_app as celery
from app.service import ActionQ

__all__ = ["ActionQ", "celery"]
