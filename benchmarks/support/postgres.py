"""A throwaway database on the machine's PostgreSQL (127.0.0.1:5432, user postgres, trust auth): created
with a unique name for one test (or session) and dropped after it, whatever the tests left connected; and
``rows``, to read what Dagster stored there behind its back."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import sqlalchemy as sa

SERVER = os.environ.get("OFFLOAD_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432")


@contextmanager
def temporary_database(prefix: str = "offload_test") -> Iterator[str]:
    """Yield the URL of a new, empty database; drop it on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield f"{SERVER}/{name}"
        finally:
            with admin.connect() as connection:
                # FORCE: a pooled connection of the code under test must not keep the database alive.
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def rows(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Rows of one query (``%(name)s`` parameters) against the database at ``url``."""
    dsn = url.replace("postgresql+psycopg2", "postgresql")
    with contextlib.closing(psycopg2.connect(dsn)) as db, db.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())
