"""SQL engines and column types shared by every database offload writes: the app database
(``resources/database``) and the webhook inbox (``offload/webhooks/inbox.py``).

A URL may name a SQLite file (the embedded default) or Postgres (``postgres://`` and ``postgresql://`` as
Supabase and Heroku print them are taken as psycopg2 URLs). SQLite gets real transactions: every one starts
with ``BEGIN IMMEDIATE``, so writers (and DDL) queue on its lock instead of failing halfway, foreign keys
are enforced, and WAL lets readers work while one writer commits.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import tenacity

from offload.errors import ConfigurationError


def normalize_url(url: str, variable: str = "DATABASE_URL") -> str:
    """``url`` with Postgres pinned to psycopg2; ``ConfigurationError`` (naming ``variable``) unless Postgres
    or SQLite."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    if url.startswith(("postgresql+psycopg2://", "sqlite://")):
        return url
    scheme = url.partition("://")[0] if "://" in url else url[:20]
    raise ConfigurationError(
        f"{variable}: scheme {scheme!r} is not supported; use postgresql://... or sqlite:///path"
    )


def create_engine(url: str, variable: str = "DATABASE_URL") -> sa.Engine:
    url = normalize_url(url, variable)
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    # Poolers (Supabase's included) close idle connections: test each one before use.
    return sa.create_engine(url, pool_pre_ping=True)


_SQLITE_TIMEOUT = 30  # seconds a connection waits for another's write lock


def _locked(error: BaseException) -> bool:
    return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)


def _sqlite_engine(url: str) -> sa.Engine:
    database = sa.make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": _SQLITE_TIMEOUT})

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide where transactions begin (the driver's own rule leaves
        # DDL outside any transaction).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        # Readers do not wait for the writer. Switching a fresh file to WAL needs the file to itself for a
        # moment, and SQLite answers "database is locked" at once (its busy timeout does not apply) while
        # another connection holds it: runs starting together on a new database retry for a while.
        for attempt in tenacity.Retrying(
            retry=tenacity.retry_if_exception(_locked),
            stop=tenacity.stop_after_delay(_SQLITE_TIMEOUT),
            wait=tenacity.wait_random(0.01, 0.1),
            reraise=True,
        ):
            with attempt:
                cursor.execute("PRAGMA journal_mode=WAL")
        # An fsync of the WAL at every commit: a commit is on disk when it returns (the webhook gateway
        # answers 2xx only then). FULL is SQLite's usual default, but a build may make WAL default to
        # NORMAL, which can lose the last commits on power loss.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        # On the driver's connection, not through SQLAlchemy's statement machinery: there this one line
        # was 7% of the webhook gateway's sampled time (py-spy; a transaction per group commit). Its
        # effect on the ingest benchmark's throughput was within the round-to-round noise.
        connection.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]

    return engine


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in and out, on every database: SQLite keeps no time zone, so a naive value read
    back is UTC by construction, and a naive value written is refused rather than guessed."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware one (datetime.now(datetime.UTC))")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def insert(connection: sa.Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_nothing`` / ``on_conflict_do_update``."""
    from sqlalchemy.dialects import postgresql, sqlite

    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
