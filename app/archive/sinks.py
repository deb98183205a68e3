"""Where archives go: JSONL files (one per conversation) or PostgreSQL.

Every sink writes a conversation whole and idempotently (archiving it twice
leaves one copy), reads it back, and says when it cannot do either by
raising ``ArchiveUnavailableError``: archival then removes nothing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

from actionq.archive.document import ARCHIVE_FORMAT, ArchivedConversation, canonical
from actionq.errors import ArchiveUnavailableError, ConfigurationError
from actionq.models import Conversation, conversation_id_problem

if TYPE_CHECKING:
    import psycopg

__all__ = ["ArchiveSink", "JsonlSink", "PostgresSink", "open_sink"]

SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class ArchiveSink(Protocol):
    """What archival and the archived reads need of an archive."""

    def write(self, archived: ArchivedConversation) -> None:
        """Store it (replacing an earlier copy), durably, then read it back and
        compare (``ArchiveUnavailableError`` if it could not, or the copy
        differs)."""

    def read(self, conversation_id: str) -> ArchivedConversation | None:
        """The archived conversation (None: not archived)."""

    def find_action(self, action_id: str) -> str | None:
        """The id of the archived conversation that holds this action (None:
        no archived action has it)."""

    def remove(self, conversation_id: str) -> None:
        """Drop its copy (a conversation that changed after it was copied)."""

    def close(self) -> None: ...


def open_sink(url: str, pg_schema: str = "actionq") -> ArchiveSink:
    """``postgresql://…`` (or ``postgres://``): PostgreSQL; ``file:///dir``
    or a plain path: JSONL files in that folder."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        return PostgresSink(url, pg_schema)
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ConfigurationError(
                f"ACTIONQ_ARCHIVE_URL: a file URL names a local folder, file:///path "
                f"(not a host, {parts.netloc!r})"
            )
        return JsonlSink(Path(unquote(parts.path)))
    if scheme:
        raise ConfigurationError(
            f"ACTIONQ_ARCHIVE_URL: unknown scheme {scheme!r} (postgresql://, file:// or a path)"
        )
    return JsonlSink(Path(url).expanduser())


def _verify(
    written: ArchivedConversation, read_back: ArchivedConversation | None, where: str
) -> None:
    if read_back is None:
        raise ArchiveUnavailableError(
            f"{where}: conversation {written.id} is not there after writing it"
        )
    if len(read_back.events) != len(written.events) or read_back.digest != written.digest:
        raise ArchiveUnavailableError(
            f"{where}: the copy of conversation {written.id} read back differs from what was "
            f"written ({len(read_back.events)} events, {read_back.digest}; expected "
            f"{len(written.events)}, {written.digest})"
        )


def _verify_action_links(sink: JsonlSink, written: ArchivedConversation, where: str) -> None:
    """Each action's link leads to its conversation, or the copy is not yet whole."""
    for action in written.actions:
        if sink.find_action(str(action["id"])) != written.id:
            raise ArchiveUnavailableError(
                f"{where}: action {action['id']} of conversation {written.id} is not found "
                "by its id after writing it"
            )


def _json_columns(text: str) -> tuple[str | None, str | None]:
    """(jsonb, text) columns for a JSON text: jsonb cannot hold a NUL
    character (a command's output or arguments may have one), so such a
    value is kept as JSON text instead."""
    return (None, text) if "\\u0000" in text else (text, None)


class JsonlSink:
    """``<folder>/<conversation id>.jsonl``: a header line (the conversation,
    its agent, the event and action counts and the digest), then one line
    per event in seq order (``{"seq", "event"}``), then one per action
    (``{"action"}``). Written to a temporary file, fsynced, renamed over the
    old copy: a reader never sees a torn archive. ``actions/<action id>`` is
    a symbolic link to its conversation's file: how an action is found by
    its id."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.absolute()
        self.action_links = self.folder / "actions"

    def _path(self, conversation_id: str) -> Path:
        # The id names a workspace folder too: one safe path component.
        problem = conversation_id_problem(conversation_id)
        if problem is not None:
            raise ArchiveUnavailableError(problem)
        return self.folder / f"{conversation_id}.jsonl"

    def write(self, archived: ArchivedConversation) -> None:
        where = f"JSONL archive {self.folder}"
        path = self._path(archived.id)
        tmp = self.folder / f".{archived.id}.jsonl.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        header = {
            "format": ARCHIVE_FORMAT,
            "archived_at": archived.archived_at,
            **archived.header(),
            "events_count": len(archived.events),
            "actions_count": len(archived.actions),
            "digest": archived.digest,
        }
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            # 0600: a conversation's content is no one else's to read.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(fd, "w", encoding="utf-8") as out:
                out.write(json.dumps(header, ensure_ascii=False) + "\n")
                for seq, event in archived.events:
                    out.write(json.dumps({"seq": seq, "event": event}, ensure_ascii=False) + "\n")
                for action in archived.actions:
                    out.write(json.dumps({"action": action}, ensure_ascii=False) + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
            _fsync_folder(self.folder)
            self._link_actions(archived)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise ArchiveUnavailableError(f"{where}: writing {archived.id} failed: {e}") from e
        _verify(archived, self.read(archived.id), where)
        _verify_action_links(self, archived, where)

    def _link_actions(self, archived: ArchivedConversation) -> None:
        if not archived.actions:
            return
        self.action_links.mkdir(mode=0o700, exist_ok=True)
        target = f"../{archived.id}.jsonl"
        for action in archived.actions:
            link = self._action_link(str(action["id"]))
            if link is None:
                continue  # never found by such an id; the copy's check says so
            # A new link renamed over any old one: never a moment without it.
            tmp = self.action_links / f".{link.name}.{secrets.token_hex(4)}.tmp"
            os.symlink(target, tmp)
            os.replace(tmp, link)
        _fsync_folder(self.action_links)

    def _action_link(self, action_id: str) -> Path | None:
        if conversation_id_problem(action_id) is not None:
            return None  # not one safe path component (ids are UUIDs)
        return self.action_links / action_id

    def find_action(self, action_id: str) -> str | None:
        link = self._action_link(action_id)
        if link is None:
            return None
        try:
            target = os.readlink(link)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ArchiveUnavailableError(f"JSONL archive {self.folder}: {e}") from e
        conversation_id = Path(target).name.removesuffix(".jsonl")
        # A link whose conversation was removed since is no longer an answer.
        return conversation_id if (self.folder / Path(target).name).exists() else None

    def read(self, conversation_id: str) -> ArchivedConversation | None:
        if conversation_id_problem(conversation_id) is not None:
            return None  # never archived under such a name
        path = self._path(conversation_id)
        try:
            with path.open(encoding="utf-8") as lines:
                header = json.loads(next(lines))
                events: list[tuple[int, dict[str, Any]]] = []
                actions: list[dict[str, Any]] = []
                for row in map(json.loads, lines):
                    if "action" in row:
                        actions.append(row["action"])
                    else:
                        events.append((int(row["seq"]), row["event"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, StopIteration) as e:
            raise ArchiveUnavailableError(f"JSONL archive {path} is unreadable: {e}") from e
        archived = _from_parts(header, events, actions)
        if (
            len(events) != header.get("events_count")
            or len(actions) != header.get("actions_count", 0)
            or archived.digest != header.get("digest")
        ):
            raise ArchiveUnavailableError(f"JSONL archive {path} does not match its digest")
        return archived

    def remove(self, conversation_id: str) -> None:
        path = self._path(conversation_id)
        try:
            archived = self.read(conversation_id)
        except ArchiveUnavailableError:
            archived = None  # an unreadable copy: its links point at nothing once it is gone
        try:
            path.unlink(missing_ok=True)
            for action in archived.actions if archived is not None else []:
                link = self._action_link(str(action["id"]))
                if link is not None:
                    link.unlink(missing_ok=True)
        except OSError as e:
            raise ArchiveUnavailableError(f"JSONL archive {self.folder}: {e}") from e

    def close(self) -> None:
        pass


def _fsync_folder(folder: Path) -> None:
    """The rename itself survives a power loss only once the folder is synced."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _from_parts(
    header: dict[str, Any],
    events: list[tuple[int, dict[str, Any]]],
    actions: list[dict[str, Any]],
) -> ArchivedConversation:
    return ArchivedConversation(
        conversation=Conversation.model_validate(header["conversation"]),
        agent_spec=header.get("agent_spec"),
        confirmation_policy=header.get("confirmation_policy"),
        events=events,
        archived_at=str(header.get("archived_at") or ""),
        actions=actions,
    )


def _replace_rows(
    connection: psycopg.Connection[Any],
    schema: str,
    table: str,
    columns: tuple[str, ...],
    conversation_id: str,
    rows: Iterable[tuple[Any, ...]],
) -> None:
    """The conversation's rows of ``table`` replaced by ``rows`` (COPY)."""
    from psycopg import sql

    where = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    connection.execute(
        sql.SQL("DELETE FROM {} WHERE conversation_id = %s").format(where), (conversation_id,)
    )
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
        where, sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with connection.cursor() as cursor, cursor.copy(copy_sql) as copy:
        for row in rows:
            copy.write_row(row)


class PostgresSink:
    """A schema of its own (made if missing) with three tables:
    ``conversations`` (one row each: status, times, the record, the agent,
    the event count and digest), ``events`` (one row per event, jsonb,
    keyed by conversation and seq) and ``actions`` (one row per action's
    record, keyed by its id, with its place in the conversation); an event
    or record with a NUL character, which jsonb cannot hold, is JSON text
    in ``event_text`` / ``record_text``. A write is one transaction: the row
    upserted, the conversation's events and actions replaced; so archiving
    twice is one copy. psycopg 3; one connection, made again after an error."""

    def __init__(self, url: str, schema: str = "actionq") -> None:
        if not SCHEMA_NAME.match(schema):
            raise ConfigurationError(
                f"ACTIONQ_ARCHIVE_PG_SCHEMA={schema!r}: a lower-case SQL name ([a-z_][a-z0-9_]*)"
            )
        self.url = url
        self.schema = schema
        self._connection: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        parts = urlsplit(url)
        # Named in messages without its password.
        self._where = f"PostgreSQL archive {parts.hostname or 'localhost'}:{parts.port or 5432}" + (
            f"{parts.path} schema {schema}"
        )

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        if self._connection is not None and not self._connection.closed:
            return self._connection
        connection = psycopg.connect(self.url, connect_timeout=5, autocommit=True)
        try:
            self._create_tables(connection)
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        return connection

    def _create_tables(self, connection: psycopg.Connection[Any]) -> None:
        """The schema and tables, if missing. Looked up first: PostgreSQL
        checks the CREATE privilege even for IF NOT EXISTS, and a role that
        may only read and write the archive must still be able to use it."""
        from psycopg import sql

        schema = sql.Identifier(self.schema)
        found = connection.execute(
            "SELECT to_regclass(%s), to_regclass(%s), to_regclass(%s)",
            tuple(f'"{self.schema}".{table}' for table in ("conversations", "events", "actions")),
        ).fetchone()
        if found is not None and None not in found:
            return
        with connection.transaction():
            connection.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            connection.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.conversations ("
                    " id text PRIMARY KEY,"
                    " status text NOT NULL,"
                    " created_at timestamptz NOT NULL,"
                    " updated_at timestamptz NOT NULL,"
                    " archived_at timestamptz NOT NULL,"
                    " events_count integer NOT NULL,"
                    " digest text NOT NULL,"
                    " info jsonb NOT NULL,"
                    " agent_spec jsonb,"
                    " confirmation_policy jsonb)"
                ).format(schema)
            )
            connection.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.events ("
                    " conversation_id text NOT NULL"
                    "  REFERENCES {}.conversations (id) ON DELETE CASCADE,"
                    " seq bigint NOT NULL,"
                    " event_id text NOT NULL,"
                    " kind text NOT NULL,"
                    " event jsonb,"
                    " event_text text,"
                    " CHECK ((event IS NULL) <> (event_text IS NULL)),"
                    " PRIMARY KEY (conversation_id, seq))"
                ).format(schema, schema)
            )
            connection.execute(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS events_by_id ON {}.events "
                    "(conversation_id, event_id)"
                ).format(schema)
            )
            # Added with archive format /2: a schema made before gets it here.
            connection.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.actions ("
                    " id text PRIMARY KEY,"
                    " conversation_id text NOT NULL"
                    "  REFERENCES {}.conversations (id) ON DELETE CASCADE,"
                    " position integer NOT NULL,"
                    " record jsonb,"
                    " record_text text,"
                    " CHECK ((record IS NULL) <> (record_text IS NULL)),"
                    " UNIQUE (conversation_id, position))"
                ).format(schema, schema)
            )

    def _failed(self, what: str, e: Exception) -> ArchiveUnavailableError:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return ArchiveUnavailableError(f"{self._where}: {what}: {message}")

    def write(self, archived: ArchivedConversation) -> None:
        import psycopg
        from psycopg import sql

        schema = sql.Identifier(self.schema)
        info = archived.conversation
        with self._lock:
            try:
                connection = self._connect()
                with connection.transaction():
                    connection.execute(
                        sql.SQL(
                            "INSERT INTO {}.conversations (id, status, created_at, updated_at,"
                            " archived_at, events_count, digest, info, agent_spec,"
                            " confirmation_policy) VALUES (%s, %s, %s, %s, %s, %s, %s,"
                            " %s::jsonb, %s::jsonb, %s::jsonb)"
                            " ON CONFLICT (id) DO UPDATE SET status = excluded.status,"
                            " created_at = excluded.created_at, updated_at = excluded.updated_at,"
                            " archived_at = excluded.archived_at,"
                            " events_count = excluded.events_count, digest = excluded.digest,"
                            " info = excluded.info, agent_spec = excluded.agent_spec,"
                            " confirmation_policy = excluded.confirmation_policy"
                        ).format(schema),
                        (
                            info.id,
                            info.status.value,
                            info.created_at,
                            info.updated_at,
                            archived.archived_at,
                            len(archived.events),
                            archived.digest,
                            canonical(info.model_dump(mode="json")),
                            None if archived.agent_spec is None else canonical(archived.agent_spec),
                            None
                            if archived.confirmation_policy is None
                            else canonical(archived.confirmation_policy),
                        ),
                    )
                    _replace_rows(
                        connection, self.schema, "events",
                        ("conversation_id", "seq", "event_id", "kind", "event", "event_text"),
                        info.id,
                        ((info.id, seq, str(event.get("id", "")), str(event.get("kind", "")),
                          *_json_columns(canonical(event))) for seq, event in archived.events),
                    )  # fmt: skip
                    _replace_rows(
                        connection, self.schema, "actions",
                        ("id", "conversation_id", "position", "record", "record_text"),
                        info.id,
                        ((str(action["id"]), info.id, position, *_json_columns(canonical(action)))
                         for position, action in enumerate(archived.actions)),
                    )  # fmt: skip
            except psycopg.Error as e:
                raise self._failed(f"writing conversation {info.id} failed", e) from e
        # The actions read back are the rows find_action looks up (keyed by
        # id): the digest's check covers them, no query per action.
        _verify(archived, self.read(archived.id), self._where)

    def read(self, conversation_id: str) -> ArchivedConversation | None:
        import psycopg
        from psycopg import sql

        schema = sql.Identifier(self.schema)
        with self._lock:
            try:
                connection = self._connect()
                with connection.transaction():
                    row = connection.execute(
                        sql.SQL(
                            "SELECT info, agent_spec, confirmation_policy, archived_at,"
                            " events_count, digest FROM {}.conversations WHERE id = %s"
                        ).format(schema),
                        (conversation_id,),
                    ).fetchone()
                    if row is None:
                        return None
                    events = connection.execute(
                        sql.SQL(
                            "SELECT seq, event, event_text FROM {}.events"
                            " WHERE conversation_id = %s ORDER BY seq"
                        ).format(schema),
                        (conversation_id,),
                    ).fetchall()
                    actions = connection.execute(
                        sql.SQL(
                            "SELECT record, record_text FROM {}.actions"
                            " WHERE conversation_id = %s ORDER BY position"
                        ).format(schema),
                        (conversation_id,),
                    ).fetchall()
            except psycopg.Error as e:
                raise self._failed(f"reading conversation {conversation_id} failed", e) from e
        info, spec, policy, archived_at, count, digest = row
        archived = _from_parts(
            {
                "conversation": info,
                "agent_spec": spec,
                "confirmation_policy": policy,
                "archived_at": archived_at.isoformat(),
            },
            [
                (int(seq), event if text is None else json.loads(text))
                for seq, event, text in events
            ],
            [record if text is None else json.loads(text) for record, text in actions],
        )
        if len(archived.events) != count or archived.digest != digest:
            raise ArchiveUnavailableError(
                f"{self._where}: conversation {conversation_id} does not match its digest"
            )
        return archived

    def find_action(self, action_id: str) -> str | None:
        import psycopg
        from psycopg import sql

        with self._lock:
            try:
                row = (
                    self._connect()
                    .execute(
                        sql.SQL("SELECT conversation_id FROM {}.actions WHERE id = %s").format(
                            sql.Identifier(self.schema)
                        ),
                        (action_id,),
                    )
                    .fetchone()
                )
            except psycopg.Error as e:
                raise self._failed(f"looking up action {action_id} failed", e) from e
        return None if row is None else str(row[0])

    def remove(self, conversation_id: str) -> None:
        import psycopg
        from psycopg import sql

        with self._lock:
            try:
                connection = self._connect()
                with connection.transaction():
                    connection.execute(
                        sql.SQL("DELETE FROM {}.conversations WHERE id = %s").format(
                            sql.Identifier(self.schema)
                        ),
                        (conversation_id,),
                    )
            except psycopg.Error as e:
                raise self._failed(f"removing conversation {conversation_id} failed", e) from e

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
