"""The shared PostgreSQL the archive tests write to (127.0.0.1:5432, trust
auth, database ``test``). Each test makes its own uniquely named schema and
drops it afterwards; the server itself is never stopped or changed."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def own_schema(prefix: str = "aq_archive_test") -> Iterator[str]:
    """A schema name nobody else uses; dropped (with all in it) at the end."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    try:
        yield name
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as connection:
            connection.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
            )


def run_sql(statement: str, *params: object) -> list[tuple[object, ...]]:
    """One statement on the shared database (rows, if it returns any)."""
    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as connection:
        cursor = connection.execute(statement, params or None)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []
