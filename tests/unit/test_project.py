"""The project's promises about itself: docs list every setting, the public
surface is what ``__all__`` says. (Settings validation: test_settings.py.)"""

from __future__ import annotations

import actionq
from actionq.settings import Settings, settings_markdown_table
from tests.helpers import ROOT


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    missing = [n for n in Settings.model_fields if f"ACTIONQ_{n.upper()}" not in doc]
    assert missing == []
    # The table is exactly what `python -m actionq.settings` prints.
    assert settings_markdown_table() in doc


PUBLIC_NAMES = [
    "ActionNotFound",
    "ActionQ",
    "ActionqError",
    "ConfigurationError",
    "ConflictError",
    "ConversationNotFound",
    "DuplicateToolCallId",
    "ErrorCause",
    "IdempotencyConflict",
    "InvalidArgumentsError",
    "InvalidTransition",
    "NotFoundError",
    "QuarantinedAction",
    "RetryInProgress",
    "StoreUnavailableError",
    "ToolContext",
    "UnknownToolError",
    "celery",
    "tool",
]


def test_public_surface() -> None:
    assert sorted(actionq.__all__) == sorted(PUBLIC_NAMES)
    for name in PUBLIC_NAMES:
        assert getattr(actionq, name) is not None, name
    assert issubclass(actionq.RetryInProgress, actionq.ConflictError)
    assert issubclass(actionq.ConflictError, actionq.ActionqError)
    assert actionq.celery.conf.task_acks_late is True
    assert actionq.celery.conf.task_reject_on_worker_lost is False
    assert actionq.celery.conf.accept_content == ["json"]
    assert actionq.celery.conf.worker_prefetch_multiplier == 1
