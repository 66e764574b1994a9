"""Run metadata: a small JSON document a run publishes while it works (Trigger.dev's ``metadata.set``).

    from offload import metadata

    @dg.op
    def encode(context):
        metadata.set("step", "encode")
        metadata.set("progress", 40)
        metadata.update({"step": "encode", "progress": 50})   # several keys in one change
        metadata.increment("renditions_done")
        metadata.append("formats", "mp4")
        metadata.remove("formats", "webm")      # a value out of a list; metadata.remove("step") drops a key
        metadata.current()                      # {"step": "encode", "progress": 40, ...}

Each call changes the run's document in one transaction, so parallel steps of one run never lose each
other's changes. The document is kept in a small table keyed by the run's *root* run id (the first attempt),
so a run resumed after a crash (a Dagster re-execution: a new run id, same ``dagster/root_run_id``) reads
back what its earlier attempts set. Every change is also written to the run's ``offload/metadata`` tag (the
Dagster UI shows it on the run; the client's ``Run.metadata``, ``subscribe`` and the gateway's realtime
stream read it from there) and logged as one line in the step's log.

Rules: keys are strings of 1-128 characters; values are JSON (``json.dumps`` without fallbacks); the whole
document is at most ``MAX_BYTES`` (64 KiB) of compact JSON. A call that breaks a rule raises ``ValueError``
naming the key and the rule, and changes nothing.

The table lives in ``OFFLOAD_METADATA_DB`` (any SQLAlchemy URL; in production the Dagster instance's
Postgres database), by default a SQLite file under the data directory (one machine).
"""

from __future__ import annotations

import builtins
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg
import sqlalchemy as sa

from offload import paths, sql_engines
from offload.client.metadata_rules import MAX_BYTES, MAX_KEY_LENGTH, METADATA_TAG, encode
from offload.log import redact

__all__ = ["MAX_BYTES", "METADATA_TAG", "append", "current", "get", "increment", "remove", "set", "update"]

ROOT_RUN_TAG = "dagster/root_run_id"
_MISSING: Any = object()

_metadata = sa.MetaData()
table = sa.Table(
    "offload_run_metadata",
    _metadata,
    sa.Column("root_run_id", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False),  # the attempt that wrote last
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)


def default_url() -> str:
    return os.environ.get("OFFLOAD_METADATA_DB") or f"sqlite:///{paths.data_dir() / 'run_metadata.sqlite3'}"


class MetadataStore:
    """The ``root run id -> document`` table. Thread-safe; one per process (``store()``)."""

    def __init__(self, url: str | None = None):
        self.url = url or default_url()
        self.engine = sql_engines.create_engine(self.url, "OFFLOAD_METADATA_DB")
        try:
            _metadata.create_all(self.engine, checkfirst=True)
        except sa.exc.SQLAlchemyError:
            # Another process created the table between our check and our CREATE: fine if it is there now.
            if not sa.inspect(self.engine).has_table(table.name):
                raise

    def read(self, root_run_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(table.c.data).where(table.c.root_run_id == root_run_id)).first()
        return json.loads(row.data) if row is not None else {}

    def update(
        self, root_run_id: str, run_id: str, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Apply ``change`` to the document in one transaction and return the new one; a ``ValueError``
        from ``change`` or the size rule leaves the stored document as it was."""
        with self.engine.begin() as tx:
            insert = sql_engines.insert(tx, table).values(
                root_run_id=root_run_id, run_id=run_id, data="{}", version=0, updated_at=time.time()
            )
            tx.execute(insert.on_conflict_do_nothing(index_elements=["root_run_id"]))
            query = sa.select(table.c.data, table.c.version).where(table.c.root_run_id == root_run_id)
            if tx.dialect.name == "postgresql":
                query = query.with_for_update()  # SQLite's BEGIN IMMEDIATE already serialises writers
            row = tx.execute(query).one()
            document = change(json.loads(row.data))
            text = encode(document)
            tx.execute(
                sa.update(table)
                .where(table.c.root_run_id == root_run_id)
                .values(run_id=run_id, data=text, version=row.version + 1, updated_at=time.time())
            )
        return document

    def close(self) -> None:
        self.engine.dispose()


_stores: dict[str, MetadataStore] = {}
_stores_lock = threading.Lock()


def store() -> MetadataStore:
    """This process's store for ``default_url()``."""
    url = default_url()
    with _stores_lock:
        if url not in _stores:
            _stores[url] = MetadataStore(url)
        return _stores[url]


def _context(context: dg.OpExecutionContext | None) -> dg.OpExecutionContext:
    if context is not None:
        return context
    try:
        return dg.OpExecutionContext.get()
    except dg.DagsterInvariantViolationError:
        raise RuntimeError("offload.metadata: call it inside a step (or pass context=)") from None


def _root(context: dg.OpExecutionContext) -> str:
    return context.run.root_run_id or context.run_id


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"metadata key {key!r}: must be a string of 1-{MAX_KEY_LENGTH} characters")
    return key


def _check_value(key: str, value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise ValueError(f"metadata {key!r}: value must be JSON (str, number, bool, list, dict)") from None
    return value


def publish(
    instance: dg.DagsterInstance,
    run_id: str,
    root_run_id: str,
    change: Callable[[dict[str, Any]], dict[str, Any]],
) -> dict[str, Any]:
    """Apply ``change`` to the run family's document (the table) and show the result on the run (its tag,
    which the UI, the client and the gateway read). What every helper below does, minus the log line."""
    document = store().update(root_run_id, run_id, change)
    instance.add_run_tags(run_id, {METADATA_TAG: encode(document)})
    return document


def _change(
    key: str, change: Callable[[dict[str, Any]], dict[str, Any]], shown: Any, context: Any
) -> dict[str, Any]:
    ctx = _context(context)
    document = publish(ctx.instance, ctx.run_id, _root(ctx), change)
    ctx.log.info(redact(f"metadata {key}: {json.dumps(shown)}"))
    return document


def set(key: str, value: Any, *, context: dg.OpExecutionContext | None = None) -> None:
    """``key`` = ``value`` in the run's metadata."""
    _check_value(_check_key(key), value)

    def change(document: dict[str, Any]) -> dict[str, Any]:
        return document | {key: value}

    _change(key, change, value, context)


def update(values: Mapping[str, Any], *, context: dg.OpExecutionContext | None = None) -> None:
    """Several keys at once, in one change (``{"step": "encode", "progress": 40}``)."""
    for key, value in values.items():
        _check_value(_check_key(key), value)

    def change(document: dict[str, Any]) -> dict[str, Any]:
        return document | dict(values)

    _change(", ".join(values), change, dict(values), context)


def increment(key: str, by: int | float = 1, *, context: dg.OpExecutionContext | None = None) -> None:
    """Add ``by`` to the number at ``key`` (0 if absent); a non-number there is a ``ValueError``."""
    _check_key(key)
    if isinstance(by, bool) or not isinstance(by, int | float):
        raise ValueError(f"metadata {key!r}: increment by a number, got {by!r}")
    new: list[Any] = []

    def change(document: dict[str, Any]) -> dict[str, Any]:
        old = document.get(key, 0)
        if isinstance(old, bool) or not isinstance(old, int | float):
            raise ValueError(f"metadata {key!r}: cannot increment {old!r}, it is not a number")
        new.append(old + by)
        return document | {key: old + by}

    _change(key, change, by, context)


def append(key: str, value: Any, *, context: dg.OpExecutionContext | None = None) -> None:
    """Add ``value`` to the list at ``key`` (a new list if absent; a single value there becomes a list)."""
    _check_value(_check_key(key), value)

    def change(document: dict[str, Any]) -> dict[str, Any]:
        old = document.get(key, [])
        items = old if isinstance(old, builtins.list) else [old]
        return document | {key: [*items, value]}

    _change(key, change, value, context)


def remove(key: str, value: Any = _MISSING, *, context: dg.OpExecutionContext | None = None) -> None:
    """Without ``value``: drop ``key``. With it: take every ``value`` out of the list at ``key``."""
    _check_key(key)

    def change(document: dict[str, Any]) -> dict[str, Any]:
        if value is _MISSING:
            return {k: v for k, v in document.items() if k != key}
        old = document.get(key)
        if not isinstance(old, builtins.list):
            return document
        return document | {key: [item for item in old if item != value]}

    _change(key, change, None if value is _MISSING else value, context)


def current(*, context: dg.OpExecutionContext | None = None) -> dict[str, Any]:
    """The run's whole metadata document, as set by this run and its earlier attempts."""
    return store().read(_root(_context(context)))


def get(key: str, default: Any = None, *, context: dg.OpExecutionContext | None = None) -> Any:
    return current(context=context).get(key, default)
