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

_lock = threading.Lock()
_engines: OrderedDict[tuple[int, str], sa.Engine] = OrderedDict()
_installed: list[bool] = []


def engine_for(url: str, **connect_args: Any) -> sa.Engine:
    """This process's engine for ``url`` (a SQLite file), made on first use."""
    key = (os.getpid(), url)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)
            _engines[key] = engine
            while len(_engines) > KEEP:
                _engines.popitem(last=False)  # NullPool: it holds no connection, nothing to close
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
            with engine.connect() as conn, conn.begin():
                yield conn

    @contextmanager
    def run_storage_connect(self: SqliteRunStorage) -> Iterator[Any]:
        with engine_for(self._conn_string).connect() as conn, conn.begin():
            yield conn

    SqliteEventLogStorage._connect = event_log_connect  # type: ignore[method-assign]
    SqliteRunStorage.connect = run_storage_connect  # type: ignore[method-assign]
