"""Engines for the app database, and its migrations.

``DATABASE_URL`` may be a SQLite file (the embedded default) or Postgres; the engines come from
``offload.sql_engines`` (shared with the webhook inbox). On SQLite every transaction starts with ``BEGIN
IMMEDIATE``, so migrations, whose DDL is then transactional too, queue on its lock instead of failing
halfway.

``migrate`` runs the Alembic migrations under ``migrations/`` to the newest revision inside one
transaction that first takes a lock (Postgres: an advisory lock; SQLite: the write lock), so two runs
starting at once on a fresh database migrate it once.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from offload.sql_engines import create_engine, normalize_url

__all__ = ["VERSION_TABLE", "create_engine", "current_revision", "head_revision", "migrate", "normalize_url"]

VERSION_TABLE = "offload_schema_version"  # not alembic_version: Dagster's own storage may share the database
MIGRATIONS = Path(__file__).with_name("migrations")
# Any fixed 64-bit number: the advisory lock is shared by every process that migrates this database.
_MIGRATION_LOCK = 0x0FF10AD


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
