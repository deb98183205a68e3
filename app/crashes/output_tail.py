"""The last output of a crashed action's command, for its ``AgentErrorEvent``.

Where the command ran on this host, its spool file (``actionq.tools.spool``)
holds all it wrote up to now: its tail is exact. Elsewhere (a sweeper on
another host, after the whole worker died) the tool process's copy in Redis
is used: it lags the command by up to ``TAIL_PUBLISH_SECONDS``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from pathlib import Path

from actionq.errors import ActionqError, UnavailableError
from actionq.models import ActionRecord
from actionq.settings import get_settings
from actionq.store import ActionStore
from actionq.tools.spool import decode_tail, read_spool_tail, remove_spool, spool_folder, spool_path

__all__ = ["crash_output_tail", "discard_output_tail"]

log = logging.getLogger(__name__)


def _tail_settings() -> tuple[int, str | None]:
    try:
        settings = get_settings()
    except (ActionqError, ValueError):  # a process without worker settings
        return 2048, None
    return settings.output_tail_bytes, settings.output_spool_dir


def _local_spool(action: ActionRecord, folder: str | None) -> Path | None:
    if action.host is not None and action.host != socket.gethostname():
        return None
    return spool_path(spool_folder(folder), action.id)


def crash_output_tail(store: ActionStore, action: ActionRecord) -> str | None:
    """The command's last ``ACTIONQ_OUTPUT_TAIL_BYTES`` of output, or None
    (not a command, nothing written, or the feature is off)."""
    size, folder = _tail_settings()
    if size == 0:
        return None
    spool = _local_spool(action, folder)
    data = read_spool_tail(spool, size) if spool is not None else None
    if data is not None:
        return decode_tail(data) if data else None
    try:
        copied = store.output_tail(action.conversation_id, action.id)
    except UnavailableError as e:
        log.warning("no output tail for action %s: %s", action.id, e)
        return None
    return copied[-size:] if copied else None


def discard_output_tail(store: ActionStore, action: ActionRecord) -> None:
    """Once the crash is recorded: the spool (if on this host) goes, and the
    copy again (the recording script deleted it; a tool process that was
    still running until its processes were killed may have written it since)."""
    _, folder = _tail_settings()
    spool = _local_spool(action, folder)
    if spool is not None:
        remove_spool(spool)
    with contextlib.suppress(UnavailableError):
        store.forget_output_tail(action.conversation_id, action.id)
