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
"""

from __future__ import annotations

import threading
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
        _installed = True


def warm() -> None:
    """Install, and read Dagster's migration scripts now (one location serves every storage)."""
    from alembic.script import ScriptDirectory
    from dagster._core.storage.runs.sqlite import sqlite_run_storage
    from dagster._core.storage.sql import get_alembic_config

    install()
    ScriptDirectory.from_config(get_alembic_config(sqlite_run_storage.__file__)).as_revision_number("head")
