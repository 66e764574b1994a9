"""New runs' SQLite event log files made by copying a ready one, not by ~20 schema statements each.

With SQLite storage (the embedded default) every run has its own event log database,
``<storage>/history/runs/<run_id>.db``, created by the first process that writes an event of the run (the
process that queues or starts it). Dagster creates it with ``SqlEventLogStorageMetadata.create_all``: about
ten ``CREATE TABLE`` and ten ``CREATE INDEX`` statements, each its own transaction with its own fsync, then
the alembic stamp. Measured on the 2-core machine under load: 0.45-0.55 s per run, most of the cost of
creating a run there (the run row itself: ~35 ms; the execution plan from the code server: ~10 ms), and it
is held under the storage's process-wide lock, so runs are created one after the other at that pace.

:func:`install` makes that first open copy a template instead: one empty event log database per process,
created by Dagster's own ``_initdb`` (so its schema and alembic revision are always the running Dagster's),
kept in memory, and written to the run's path with a link that fails if the file exists (another process
made it first: that one is used). Dagster's ``_initdb`` then runs as before and finds the database at head,
so it checks the revision and creates nothing. Postgres storage is not concerned (one database, no files).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import uuid
from typing import Any

_lock = threading.Lock()
_installed = False
_template: bytes | None = None


def _template_bytes(original: Any, storage: Any) -> bytes:
    """An empty, stamped event log database made by Dagster's own ``_initdb``, once per process."""
    global _template
    with _lock:
        if _template is None:
            import sqlalchemy as sa
            from sqlalchemy.pool import NullPool

            with tempfile.TemporaryDirectory(prefix="offload-event-log-") as scratch:
                path = os.path.join(scratch, "template.db")
                engine = sa.create_engine(f"sqlite:///{path}", poolclass=NullPool)
                try:
                    original(storage, engine)
                    with engine.connect() as connection:  # fold the WAL into the file: one file to copy
                        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    engine.dispose()
                with open(path, "rb") as file:
                    _template = file.read()
        return _template


def _place(path: str, content: bytes) -> None:
    """Write ``content`` at ``path`` unless a file is there: readers never see it half-written."""
    scratch = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(scratch, "wb") as file:
        file.write(content)
    try:
        os.link(scratch, path)
    except FileExistsError:
        pass  # another process created the run's database first: it is as good as ours
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(scratch)


def install() -> None:
    """In this process, create each new run's SQLite event log database from the template."""
    global _installed
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
        INDEX_SHARD_NAME,
        SqliteEventLogStorage,
    )

    with _lock:
        if _installed:
            return
        original = SqliteEventLogStorage._initdb

        def _initdb(self: Any, engine: Any, for_index_shard: bool = False) -> None:
            path = engine.url.database
            shard = os.path.splitext(os.path.basename(path or ""))[0]
            if not for_index_shard and path and shard != INDEX_SHARD_NAME and not os.path.exists(path):
                _place(path, _template_bytes(original, self))
            original(self, engine, for_index_shard)

        SqliteEventLogStorage._initdb = _initdb  # type: ignore[method-assign]
        _installed = True
