"""Dagster's schema check, without reading every migration script each time.

Each time a Dagster SQLite storage opens a database it has not opened before (the run and schedule
storage when an instance is created, and every run's own event log file, in every process that writes
to it: the webserver or daemon that starts the run, and the run worker), it compares the database's
alembic revision with the newest one (``dagster._core.storage.sql.check_alembic_revision``). Alembic
finds the newest by building a fresh ``ScriptDirectory``, which imports each of Dagster's ~90 migration
scripts from disk: 25-40 ms per check here, four checks per run in its worker alone (about 0.15 s of a
forked worker's start). The scripts are part of the installed Dagster and do not change while a process
runs, so :func:`install` keeps one ``ScriptDirectory`` per script location; :func:`warm` builds Dagster's
before a fork server forks, so run workers inherit it ready. The check itself (the database's revision
against the head) still runs every time.

**Column checks.** Dagster's SQL run storage also asks, before every run status write and every run
records query, whether a migration added some columns or tables
(``SqlRunStorage.has_run_stats_index_cols`` and its siblings): a connection and a reflection of the
table each time, eight times in a trivial run's worker. :func:`install` keeps each check's answer once it
is yes, per database (a migration adds them; none removes them while a process runs); a no is asked again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_lock = threading.Lock()
_installed = False


def install() -> None:
    """Memoize alembic's ``ScriptDirectory.from_config`` by script location, in this process."""
    global _installed
    from alembic.script import ScriptDirectory

    with _lock:
        if _installed:
            return
        build = ScriptDirectory.from_config
        cache: dict[str | None, ScriptDirectory] = {}

        def from_config(cls: type[ScriptDirectory], config: Any) -> ScriptDirectory:
            location = config.get_main_option("script_location")
            with _lock:
                if location not in cache:
                    cache[location] = build(config)
                return cache[location]

        ScriptDirectory.from_config = classmethod(from_config)  # type: ignore[method-assign,assignment]
        _remember_column_checks()
        _installed = True


COLUMN_CHECKS = (
    "has_run_stats_index_cols",
    "has_bulk_actions_selector_cols",
    "has_backfill_id_column",
    "has_backfill_tags_table",
)


def _remember_column_checks() -> None:
    """Make each of ``COLUMN_CHECKS`` answer yes from memory once a database has answered yes."""
    from dagster._core.storage.runs.sql_run_storage import SqlRunStorage

    for name in COLUMN_CHECKS:
        setattr(SqlRunStorage, name, remember_yes(name, getattr(SqlRunStorage, name)))


_known_yes: set[tuple[str, str]] = set()  # (check, database)


def remember_yes(name: str, check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """``check`` (a storage method), asked again only until it answers yes for the storage's database."""

    def answer(storage: Any) -> bool:
        key = (name, _database(storage))
        if key in _known_yes:
            return True
        found = bool(check(storage))
        if found:
            _known_yes.add(key)
        return found

    return answer


def _database(storage: Any) -> str:
    """What identifies a run storage's database: its URL (SQLite's file or Postgres's), else the object."""
    for attribute in ("_conn_string", "postgres_url", "mysql_url"):
        value = getattr(storage, attribute, None)
        if isinstance(value, str):
            return value
    return f"object {id(storage)}"


def warm() -> None:
    """Install, and read Dagster's migration scripts now (one location serves every storage)."""
    from alembic.script import ScriptDirectory
    from dagster._core.storage.runs.sqlite import sqlite_run_storage
    from dagster._core.storage.sql import get_alembic_config

    install()
    ScriptDirectory.from_config(get_alembic_config(sqlite_run_storage.__file__)).as_revision_number("head")
