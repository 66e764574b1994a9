"""One SQLAlchemy engine per SQLite database file and process, for Dagster's SQLite run and event storage.

Dagster's SQLite storages build a new engine for every connection they open (``create_engine(...,
poolclass=NullPool)``, then ``dispose``): about 0.5 ms each, and, worse, every statement is compiled anew,
because SQLAlchemy caches compiled statements per engine. A trivial run's worker opens about 40 such
connections (one per event it stores, and the run reads), so building engines and compiling statements
was about a third of its CPU (profiled in process: ``create_engine`` ~20 ms and compilation ~25 ms a
run). :func:`install` keeps one engine per database file in each process, still with ``NullPool`` (a
connection per use, closed after it, exactly as before: nothing is held open between uses, so many
processes share the files as before), so only the engine and its statement cache are reused. A forked
process makes its own engines (they are keyed by process id). A process that reads many runs' files (the
webserver, the daemon) keeps the ``KEEP`` it used last: each engine holds its compiled statements.

**A run worker holds its connections.** Dagster's SQLite files are in WAL mode, and closing the last
connection to one checkpoints it and deletes its ``-wal`` and ``-shm`` files: with a connection per
event, every event a worker stored paid an open, a checkpoint, two file deletions and their re-creation
(~0.7 ms of CPU, most of it in the kernel, against ~0.2 ms with the connection kept; measured on this
project's machine). A forked run worker (offload/runtime/forkserver.py) calls :func:`hold_connections`:
its engines then keep their connections open (a small pool per file) until the worker exits
(:func:`close_all`). Each event still commits on its own with SQLite's full sync, so nothing is less
durable: a worker killed mid-run leaves committed events in the ``-wal`` file, which the next connection
reads. What the per-event close also did is kept: after a commit that wrote to a run's event log the worker
checkpoints it (``PRAGMA wal_checkpoint(PASSIVE)``), because the Dagster UI follows a running run by
watching its ``<run id>.db`` file for modifications, and only a checkpoint writes to that file.

Postgres storage is not concerned: Dagster's Postgres storages already keep one pooled engine.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

KEEP = 32  # engines kept per process, the most recently used
HELD_PER_FILE = 2  # connections a run worker keeps open per file (its threads that use it at once)

_lock = threading.Lock()
_engines: OrderedDict[tuple[int, str], sa.Engine] = OrderedDict()
_installed: list[bool] = []
_holding: set[int] = set()  # the processes (pids) whose engines keep their connections


def hold_connections() -> None:
    """From now on this process's new engines keep their connections open (a run worker: module doc)."""
    _holding.add(os.getpid())


def holds_connections() -> bool:
    return os.getpid() in _holding


def close_all() -> None:
    """Close the connections this process's engines hold (the last close checkpoints each file)."""
    with _lock:
        mine = [key for key in _engines if key[0] == os.getpid()]
        for key in mine:
            _engines.pop(key).dispose()


def engine_for(url: str, **connect_args: Any) -> sa.Engine:
    """This process's engine for ``url`` (a SQLite file), made on first use."""
    key = (os.getpid(), url)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            if holds_connections():
                # Pooled connections move between threads (one at a time): sqlite3 must allow it.
                arguments = {**connect_args, "check_same_thread": False}
                engine = sa.create_engine(  # more threads at once get extra connections, never a wait
                    url, pool_size=HELD_PER_FILE, max_overflow=-1, connect_args=arguments
                )
            else:
                engine = sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)
            _engines[key] = engine
            while len(_engines) > KEEP:
                _engines.popitem(last=False)[1].dispose()  # a held engine's connections are closed
        else:
            _engines.move_to_end(key)
        return engine


def install() -> None:
    """Make this process's Dagster SQLite run and event log storages reuse their engines."""
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
    from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
    from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS

    with _lock:
        if _installed:
            return
        _installed.append(True)

    @contextmanager
    def event_log_connect(self: SqliteEventLogStorage, shard: str) -> Iterator[Any]:
        # Dagster's own body (sqlite_event_log.py), with the engine kept instead of made and disposed.
        with self._db_lock:
            engine = engine_for(self.conn_string_for_shard(shard), timeout=SQLITE_BUSY_TIMEOUT_SECONDS)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                raw: Any = conn.connection.driver_connection  # the sqlite3.Connection
                changes = raw.total_changes
                with conn.begin():
                    yield conn
                if holds_connections() and raw.total_changes != changes:
                    raw.execute("PRAGMA wal_checkpoint(PASSIVE)")  # the UI watches the file (module doc)

    @contextmanager
    def run_storage_connect(self: SqliteRunStorage) -> Iterator[Any]:
        with engine_for(self._conn_string).connect() as conn, conn.begin():
            yield conn

    SqliteEventLogStorage._connect = event_log_connect  # type: ignore[method-assign]
    SqliteRunStorage.connect = run_storage_connect  # type: ignore[method-assign]
