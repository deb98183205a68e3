"""The periodic archival: bounded, verified, and never removing what changed.

Each ``Archiver.sweep`` looks at no more than ``batch`` conversations, read
from the per-status index of each status that may be archived (no scan of
all conversations), a page per status from where its last sweep stopped.
For each one whose ``updated_at`` is older than the retention period:

1. export it from Redis (``ConversationStore.export_conversation``);
2. write it to the sink, which reads it back and compares count and digest;
3. only then delete it from Redis, on condition that its status,
   ``last_seq`` and ``updated_at`` are still those exported, checked in the
   same Lua step as the delete (``delete_conversation.lua``).

A sink that fails (unreachable, or refusing the write) stops the sweep with
one warning and nothing removed; the next sweep goes on after that
conversation, which is tried again when the index comes round again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import get_args

from actionq.archive.document import ArchivedConversation
from actionq.archive.sinks import ArchiveSink, open_sink
from actionq.errors import (
    ActionqError,
    ArchiveUnavailableError,
    ConfigurationError,
    ConversationNotFound,
    InvalidTransition,
)
from actionq.models import utc_now
from actionq.settings import ArchivableStatus, Settings
from actionq.store import ActionStore

__all__ = ["ArchiveReport", "ArchiveThread", "Archiver", "archiver_from_settings", "sweep_logged"]

log = logging.getLogger(__name__)

# The statuses that may be archived: ended, or left as they are by the user.
# Never running or waiting_for_confirmation (work may be in flight; the
# delete script refuses them too).
ARCHIVABLE_STATUSES: tuple[str, ...] = get_args(ArchivableStatus)
_TURN = "archive"


@dataclass
class ArchiveReport:
    """What one sweep did: archived and removed from Redis; changed after
    the export (kept in Redis); not archived because the sink failed."""

    archived: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class Archiver:
    """Archives the conversations of ``statuses`` not updated for
    ``after_seconds`` into ``sink``, ``batch`` candidates per sweep."""

    def __init__(
        self,
        store: ActionStore,
        sink: ArchiveSink,
        *,
        after_seconds: float,
        statuses: Sequence[str] = ("finished",),
        batch: int = 100,
        turn_seconds: float = 300.0,
    ) -> None:
        unknown = set(statuses) - set(ARCHIVABLE_STATUSES)
        if unknown:
            raise ConfigurationError(f"statuses that cannot be archived: {sorted(unknown)}")
        self.store = store
        self.sink = sink
        self.after_seconds = after_seconds
        self.statuses = tuple(statuses)
        self.batch = batch
        self.turn_seconds = turn_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        # Where each status's index was left (a creation-time score; None:
        # from the oldest), so that conversations created early but still in
        # use do not hide the rest from every sweep.
        self._after: dict[str, float | None] = dict.fromkeys(self.statuses)

    def sweep(self, now: float | None = None) -> ArchiveReport:
        """One bounded round (``now``: Redis server time, for tests)."""
        report = ArchiveReport()
        # One archiver at a time across workers: the others would only copy
        # the same conversations again (harmless, wasted).
        if not self.store.take_turn(_TURN, self.owner, self.turn_seconds):
            return report
        try:
            now = self.store.server_time() if now is None else now
            per_status = max(1, self.batch // max(1, len(self.statuses)))
            for status in self.statuses:
                if not self._sweep_status(status, now, per_status, report):
                    break
        finally:
            self.store.end_turn(_TURN, self.owner)
        if report.archived:
            log.info("archived %d conversation(s)", len(report.archived))
        return report

    def _sweep_status(self, status: str, now: float, limit: int, report: ArchiveReport) -> bool:
        """False: the sink failed, stop this sweep."""
        page = self.store.conversations_with_status(status, self._after[status], limit)
        # A short page is the end of the index: the next sweep starts over.
        self._after[status] = page[-1][1] if len(page) == limit else None
        for conversation_id, score, updated_at in page:
            if not updated_at or not self._old_enough(updated_at, now):
                continue
            try:
                if not self.archive_one(conversation_id, now, report):
                    continue
            except ArchiveUnavailableError as e:
                report.failed.append(conversation_id)
                log.warning(
                    "archival: conversation %s was not archived and nothing was removed from "
                    "Redis; it is tried again on the next sweep: %s",
                    conversation_id,
                    e,
                )
                # The next sweep goes on after it: one conversation the sink
                # refuses (for its content, say) does not hold up the others;
                # it is tried again when the index comes round again.
                self._after[status] = score
                return False
        return True

    def _old_enough(self, updated_at: str, now: float) -> bool:
        try:
            moment = datetime.fromisoformat(updated_at)
        except ValueError:
            return False
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return now - moment.timestamp() >= self.after_seconds

    def archive_one(self, conversation_id: str, now: float, report: ArchiveReport) -> bool:
        """Export, write and verify, then remove if unchanged. True if it was
        archived; ``ArchiveUnavailableError`` if the sink failed."""
        try:
            export = self.store.export_conversation(conversation_id)
        except ConversationNotFound:
            return False  # deleted meanwhile (or another archiver took it)
        if export.status not in self.statuses or not self._old_enough(export.updated_at, now):
            return False  # its status moved between the index and the export
        archived = ArchivedConversation.from_export(export, archived_at=utc_now())
        self.sink.write(archived)  # written and read back, or it raised
        try:
            removed = self.store.delete_conversation(conversation_id, unless_changed_since=export)
        except ConversationNotFound:
            removed = False
        except InvalidTransition:  # it started running after the export
            removed = False
        if removed:
            report.archived.append(conversation_id)
            return True
        report.changed.append(conversation_id)
        log.info(
            "archival: conversation %s changed while it was copied; kept in Redis", conversation_id
        )
        # Its copy is older than Redis' (which is what the API serves): drop it.
        try:
            if self.store.conversation_exists(conversation_id):
                self.sink.remove(conversation_id)
        except ArchiveUnavailableError as e:
            log.warning(
                "archival: the stale copy of %s stays in the archive: %s", conversation_id, e
            )
        return False


def archiver_from_settings(store: ActionStore, settings: Settings) -> Archiver | None:
    """The archiver the settings ask for (None: archival is off)."""
    if settings.archive_after_seconds <= 0 or not settings.archive_url:
        return None
    return Archiver(
        store,
        open_sink(settings.archive_url, settings.archive_pg_schema),
        after_seconds=settings.archive_after_seconds,
        statuses=settings.archive_statuses,
        batch=settings.archive_batch,
    )


class ArchiveThread:
    """Runs ``archiver.sweep`` every ``interval`` seconds on a thread of its
    own (a worker's: the sink's I/O never holds up its event loop)."""

    def __init__(self, archiver: Archiver, interval: float) -> None:
        self.archiver = archiver
        self.interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="actionq-archive", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self.archiver.sink.close()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            sweep_logged(self.archiver)


def sweep_logged(archiver: Archiver) -> ArchiveReport | None:
    """One sweep; a failure is logged, never raised (the next one tries again)."""
    try:
        return archiver.sweep()
    except ActionqError as e:  # Redis away for a moment
        log.warning("archival sweep failed: %s", e)
    except Exception:  # never the end of the loop
        log.exception("archival sweep failed")
    return None
