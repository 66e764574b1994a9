"""A table in any SQL database SQLAlchemy reaches, for incremental syncs: read what changed after a watermark,
upsert rows and advance the watermark in one transaction.

The watermark is the ``(cursor, key)`` of the last row loaded (``updated_at`` and ``id`` by default), so rows
that share a cursor value are neither skipped nor read twice when a batch ends among them. It lives in the
destination database, in ``offload_sync_watermarks``, and is written in the same transaction as the rows:
either both change or neither does, so a run that fails midway leaves the watermark where it was and the next
run reads the same rows again (upserts make that harmless). Before it writes, the load checks that the
watermark is still the one its rows were read after; if another run moved it, nothing is loaded.

Postgres and SQLite use the same engines as the app database (SQLite writes under ``BEGIN IMMEDIATE``); any
other SQLAlchemy URL works with its own driver installed.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field, PrivateAttr
from sqlalchemy.dialects import postgresql, sqlite

from offload.errors import ConfigurationError
from resources.database import engine as engines

WATERMARKS = "offload_sync_watermarks"
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
IDENTIFIER_RULE = "must be 1-63 characters of A-Z, a-z, 0-9 and '_', not starting with a digit"
_CHUNK = 500  # rows per INSERT statement


def check_identifier(field: str, value: str) -> str:
    """``value`` if it is a plain SQL identifier, else ``ValueError`` naming ``field``."""
    if not IDENTIFIER.fullmatch(value):
        raise ValueError(f"{field}: {value!r} {IDENTIFIER_RULE}")
    return value


def create_engine(url: str) -> sa.Engine:
    """Postgres and SQLite as the app database has them; anything else as SQLAlchemy makes it."""
    if url.startswith(("postgres://", "postgresql://", "postgresql+psycopg2://", "sqlite://")):
        return engines.create_engine(url)
    return sa.create_engine(url, pool_pre_ping=True)


@dataclass(frozen=True)
class Watermark:
    """The ``(cursor, key)`` of the last row loaded; rows sort by cursor, then key."""

    cursor: Any
    key: Any

    def to_json(self) -> str:
        return json.dumps({"cursor": _encode(self.cursor), "key": _encode(self.key)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Watermark:
        data = json.loads(text)
        return cls(_decode(data["cursor"]), _decode(data["key"]))

    def describe(self) -> dict[str, str]:
        return {"cursor": str(self.cursor), "key": str(self.key)}


def _encode(value: Any) -> Any:
    """JSON for a cursor or key value, keeping its type (datetimes stay datetimes when read back)."""
    if isinstance(value, dt.datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"decimal": str(value)}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ValueError(f"a {type(value).__name__} cannot be a watermark: use a timestamp, number or text")


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "datetime" in value:
            return dt.datetime.fromisoformat(value["datetime"])
        if "date" in value:
            return dt.date.fromisoformat(value["date"])
        return decimal.Decimal(value["decimal"])
    return value


class WatermarkMoved(RuntimeError):
    """Another run loaded (and moved the watermark) since this run read its rows."""


_watermarks_metadata = sa.MetaData()
watermarks = sa.Table(
    WATERMARKS,
    _watermarks_metadata,
    sa.Column("name", sa.String(255), primary_key=True),  # the destination table
    sa.Column("watermark", sa.Text, nullable=False),  # Watermark.to_json()
    sa.Column("rows_loaded", sa.BigInteger, nullable=False),  # in total, over all runs
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


class SqlTable(dg.ConfigurableResource):
    """One table of a database at a SQLAlchemy URL. ``url_variable`` and ``table_variable`` name the settings
    that set them, so a missing one is reported by the name the operator sets."""

    url: str | None = Field(
        default=None, description="SQLAlchemy URL (bound with dg.EnvVar: may hold a password)."
    )
    table: str | None = Field(default=None, description="Table name.")
    url_variable: str = Field(
        default="the URL", description="Setting that holds the URL, for error messages."
    )
    table_variable: str = Field(default="the table", description="Setting that holds the table name.")

    _engine: sa.Engine | None = PrivateAttr(default=None)

    @property
    def configured(self) -> bool:
        return bool(self.url and self.table)

    def _require(self) -> tuple[str, str]:
        """The URL and table, or a ``ConfigurationError`` naming the setting to set. Checked on first use,
        not at setup: the ``frequent_sync`` schedule takes this resource to see whether it is configured."""
        if not self.url:
            raise ConfigurationError(f"{self.url_variable} is not set: set it to a SQLAlchemy database URL")
        if not self.table:
            raise ConfigurationError(f"{self.table_variable} is not set: set it to the name of a table")
        try:
            check_identifier(self.table_variable, self.table)
        except ValueError as error:
            raise ConfigurationError(str(error)) from None
        return self.url, self.table

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    @property
    def name(self) -> str:
        return self._require()[1]

    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = create_engine(self._require()[0])
        return self._engine

    def reflect(self) -> sa.Table | None:
        """The table as the database describes it, or None if it does not exist."""
        with self.engine().connect() as connection:
            if not sa.inspect(connection).has_table(self.name):
                return None
            return sa.Table(self.name, sa.MetaData(), autoload_with=connection)

    # -- reading -------------------------------------------------------------------------------------------

    def changes_after(
        self, cursor_column: str, key_column: str, after: Watermark | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``limit`` rows after ``after`` in (cursor, key) order, and whether more are waiting. Rows
        whose cursor is NULL have no place in that order and are never read."""
        table = self.reflect()
        if table is None:
            raise LookupError(f"source table {self.name!r} does not exist")
        for field, column in (("cursor_column", cursor_column), ("key", key_column)):
            if column not in table.c:
                raise LookupError(f"{field}: table {self.name!r} has no column {column!r}")
        cursor, key = table.c[cursor_column], table.c[key_column]
        query = sa.select(table).where(cursor.is_not(None)).order_by(cursor, key).limit(limit + 1)
        if after is not None:
            query = query.where(
                sa.or_(cursor > after.cursor, sa.and_(cursor == after.cursor, key > after.key))
            )
        with self.engine().connect() as connection:
            rows = [dict(row._mapping) for row in connection.execute(query)]
        return rows[:limit], len(rows) > limit

    def watermark(self) -> Watermark | None:
        """This (destination) table's watermark, or None before its first load."""
        with self.engine().connect() as connection:
            if not sa.inspect(connection).has_table(WATERMARKS):
                return None
            stored = connection.scalar(
                sa.select(watermarks.c.watermark).where(watermarks.c.name == self.name)
            )
        return Watermark.from_json(stored) if stored is not None else None

    # -- writing -------------------------------------------------------------------------------------------

    def load(
        self,
        rows: Sequence[Mapping[str, Any]],
        key_column: str,
        like: sa.Table,
        expected: Watermark | None,
        new: Watermark,
    ) -> int:
        """Upsert ``rows`` by ``key_column`` and move the watermark from ``expected`` to ``new``, in one
        transaction. The table is created like ``like`` (its columns, ``key_column`` as primary key) if it
        does not exist. ``WatermarkMoved`` if the stored watermark is not ``expected``: nothing changes."""
        engine = self.engine()
        self._ensure_tables(engine, like, key_column)
        table = self.reflect()
        assert table is not None
        columns = [c.name for c in like.columns if c.name in table.c]
        _store_as_they_are(table)
        with engine.begin() as connection:
            query = sa.select(watermarks.c.watermark, watermarks.c.rows_loaded).where(
                watermarks.c.name == self.name
            )
            if connection.dialect.name == "postgresql":
                query = query.with_for_update()
            stored = connection.execute(query).first()
            current = Watermark.from_json(stored.watermark) if stored is not None else None
            if current != expected:
                raise WatermarkMoved(
                    f"the watermark of {self.name!r} moved to {current} since this run read its rows "
                    f"after {expected}: another run loaded first; nothing was loaded"
                )
            values = [{c: _as_stored(row[c], table.c[c].type) for c in columns} for row in rows]
            for start in range(0, len(values), _CHUNK):
                _upsert(connection, table, key_column, values[start : start + _CHUNK])
            loaded = (stored.rows_loaded if stored is not None else 0) + len(values)
            state = {"watermark": new.to_json(), "rows_loaded": loaded, "updated_at": dt.datetime.now(dt.UTC)}
            if stored is None:
                connection.execute(sa.insert(watermarks).values(name=self.name, **state))
            else:
                connection.execute(
                    sa.update(watermarks).where(watermarks.c.name == self.name).values(**state)
                )
        return len(values)

    def _ensure_tables(self, engine: sa.Engine, like: sa.Table, key_column: str) -> None:
        metadata = sa.MetaData()
        sa.Table(
            self.name,
            metadata,
            *(
                sa.Column(c.name, _portable(c.type), primary_key=c.name == key_column, nullable=c.nullable)
                for c in like.columns
            ),
        )
        watermarks.to_metadata(metadata)
        metadata.create_all(engine, checkfirst=True)


def _store_as_they_are(table: sa.Table) -> None:
    """Make ``table``'s JSON columns write Python None as SQL NULL. SQLAlchemy's default writes it as the
    JSON text ``null``, but a None read from the source is a SQL NULL there: the copy keeps it NULL."""
    for column in table.columns:
        if isinstance(column.type, sa.JSON):
            column.type.none_as_null = True


def _as_stored(value: Any, kind: sa.types.TypeEngine[Any]) -> Any:
    """``value`` as the destination column keeps the same instant. A Postgres source hands timestamps back in
    its session's time zone (``2026-03-01 07:00-05:00`` in New York); a column without a time zone (SQLite's,
    Postgres' ``timestamp``) would keep that wall time and drop the offset, so it gets naive UTC instead."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        utc = value.astimezone(dt.UTC)
        return utc if getattr(kind, "timezone", False) else utc.replace(tzinfo=None)
    return value


def _portable(kind: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    """The dialect-neutral form of a reflected type (SQLite's DATETIME, Postgres' TIMESTAMP WITH TIME ZONE ->
    DateTime), so a table read on one database can be created on another."""
    try:
        return kind.as_generic()
    except NotImplementedError:
        return kind


def _upsert(
    connection: sa.Connection, table: sa.Table, key: str, values: Iterable[Mapping[str, Any]]
) -> None:
    values = list(values)
    if not values:
        return
    updates = [c for c in values[0] if c != key]
    dialect = connection.dialect.name
    if dialect in ("postgresql", "sqlite"):
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table).values(values)
        if updates:
            statement = insert.on_conflict_do_update(
                index_elements=[key], set_={c: insert.excluded[c] for c in updates}
            )
        else:
            statement = insert.on_conflict_do_nothing(index_elements=[key])
        connection.execute(statement)
        return
    # Any other database: replace the rows by key, inside the caller's transaction.
    connection.execute(sa.delete(table).where(table.c[key].in_([row[key] for row in values])))
    connection.execute(sa.insert(table), values)
