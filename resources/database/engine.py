"""Engines for the app database, and its migrations.

``DATABASE_URL`` may be a SQLite file (the embedded default) or Postgres (``postgres://`` and
``postgresql://`` as Supabase and Heroku print them are taken as psycopg2 URLs). SQLite gets real
transactions: every one starts with ``BEGIN IMMEDIATE``, so writers (and migrations, whose DDL is then
transactional too) queue on its lock instead of failing halfway, and foreign keys are enforced.

``migrate`` runs the Alembic migrations under ``migrations/`` to the newest revision inside one
transaction that first takes a lock (Postgres: an advisory lock; SQLite: the write lock), so two runs
starting at once on a fresh database migrate it once.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import tenacity
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from offload.errors import ConfigurationError

VERSION_TABLE = "offload_schema_version"  # not alembic_version: Dagster's own storage may share the database
MIGRATIONS = Path(__file__).with_name("migrations")
# Any fixed 64-bit number: the advisory lock is shared by every process that migrates this database.
_MIGRATION_LOCK = 0x0FF10AD


def normalize_url(url: str) -> str:
    """``url`` with Postgres pinned to psycopg2; ``ConfigurationError`` unless Postgres or SQLite."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    if url.startswith(("postgresql+psycopg2://", "sqlite://")):
        return url
    scheme = url.partition("://")[0] if "://" in url else url[:20]
    raise ConfigurationError(
        f"DATABASE_URL: scheme {scheme!r} is not supported; use postgresql://... or sqlite:///path"
    )


def create_engine(url: str) -> sa.Engine:
    url = normalize_url(url)
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
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()


def migrate(engine: sa.Engine) -> str:
    """Bring the schema to the newest revision (nothing to do if it is there) and return that revision."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config = _config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return head_revision()


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config
