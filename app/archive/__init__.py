"""Retention and archival (docs/operations.md, "Retention and archival"):
conversations that ended long enough ago are copied out of Redis into an
archive (JSONL files or PostgreSQL), the copy is read back and compared,
and only then are they removed from Redis; the HTTP API keeps serving them
from the archive, read-only.

- ``document``: what an archived conversation is, and its digest.
- ``sinks``: where archives go (``JsonlSink``, ``PostgresSink``, ``open_sink``).
- ``sweep``: ``Archiver``, the bounded periodic archival the sweepers run.
"""

from actionq.archive.document import ArchivedConversation
from actionq.archive.sinks import ArchiveSink, JsonlSink, PostgresSink, open_sink
from actionq.archive.sweep import (
    Archiver,
    ArchiveReport,
    ArchiveThread,
    archiver_from_settings,
    sweep_logged,
)

__all__ = [
    "ArchiveReport",
    "ArchiveSink",
    "ArchiveThread",
    "ArchivedConversation",
    "Archiver",
    "JsonlSink",
    "PostgresSink",
    "archiver_from_settings",
    "open_sink",
    "sweep_logged",
]
