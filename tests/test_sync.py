"""``data_pipeline`` (the ``frequent_sync`` job) end to end, on SQLite files and on the real PostgreSQL of
this machine (a database of the session's own): the first run copies the source table, later runs only new and
changed rows; a rerun with nothing new changes nothing, and one from a lost watermark upserts the same rows
again without duplicates; rows sharing a timestamp across batch ends are neither skipped nor doubled; a load
that fails midway (a row the destination refuses) leaves destination and watermark as they were, and the
next run after the fix loads everything; a non-unique key fails in transform; another run's load in between
stops a stale one; the steps log structured lines; SQLite into Postgres works; a missing source setting is
one line."""

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from pipelines.sync import data_pipeline
from resources.sync_table import SqlTable, Watermark, WatermarkMoved, create_engine
from tests.support.runs import failure_text, output_metadata

T0 = dt.datetime(2026, 3, 1, 12, 0, 0)
PAYLOAD = {"timestamp": "2026-03-01T12:15:00+00:00", "last_timestamp": "2026-03-01T12:00:00+00:00"}


class Tables:
    """A source table and a destination table name, on one backend."""

    def __init__(self, source_url: str, destination_url: str):
        suffix = uuid.uuid4().hex[:8]
        self.source_url, self.destination_url = source_url, destination_url
        self.source_name, self.destination_name = f"orders_{suffix}", f"orders_copy_{suffix}"
        self.source_engine = create_engine(source_url)
        self.destination_engine = create_engine(destination_url)
        self.table = sa.Table(
            self.source_name,
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("customer", sa.String(64), nullable=False),
            sa.Column("amount", sa.Integer, nullable=False),
            sa.Column("updated_at", sa.DateTime),
        )
        self.table.create(self.source_engine)

    def write(self, *rows: tuple[int, str, int, dt.datetime]) -> None:
        """Insert or replace rows ``(id, customer, amount, updated_at)`` in the source."""
        with self.source_engine.begin() as connection:
            for row_id, customer, amount, updated_at in rows:
                connection.execute(sa.delete(self.table).where(self.table.c.id == row_id))
                connection.execute(
                    sa.insert(self.table).values(
                        id=row_id, customer=customer, amount=amount, updated_at=updated_at
                    )
                )

    def resources(self) -> dict[str, Any]:
        return {
            "sync_source": SqlTable(url=self.source_url, table=self.source_name),
            "sync_destination": SqlTable(url=self.destination_url, table=self.destination_name),
        }

    def run(self, **payload: Any) -> dg.ExecuteInProcessResult:
        return data_pipeline.execute_in_process(
            run_config=PAYLOAD | payload, resources=self.resources(), raise_on_error=False
        )

    def source_rows(self) -> list[tuple]:
        with self.source_engine.connect() as connection:
            return [tuple(r) for r in connection.execute(sa.select(self.table).order_by(self.table.c.id))]

    def destination_rows(self) -> list[tuple]:
        with self.destination_engine.connect() as connection:
            if not sa.inspect(connection).has_table(self.destination_name):
                return []
            copy = sa.Table(self.destination_name, sa.MetaData(), autoload_with=connection)
            rows = connection.execute(sa.select(copy).order_by(copy.c.id))
            return [tuple(_naive(v) for v in r) for r in rows]

    def watermark(self) -> Watermark | None:
        return SqlTable(url=self.destination_url, table=self.destination_name).watermark()

    def dispose(self) -> None:
        self.source_engine.dispose()
        self.destination_engine.dispose()


def _naive(value: Any) -> Any:
    """Postgres hands back what SQLite keeps naive as UTC-aware: compare as naive UTC."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


@pytest.fixture(params=["sqlite", "postgres"])
def tables(request, tmp_path: Path) -> Iterator[Tables]:
    if request.param == "sqlite":
        made = Tables(f"sqlite:///{tmp_path / 'source.db'}", f"sqlite:///{tmp_path / 'destination.db'}")
    else:
        url = request.getfixturevalue("postgres_url")
        made = Tables(url, url)
    yield made
    made.dispose()


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def test_first_run_copies_the_table_later_runs_only_changes(tables):
    tables.write(*[(i, f"c{i}", i * 100, at(i)) for i in range(1, 6)])

    first = tables.run()

    assert first.success, failure_text(first)
    assert tables.destination_rows() == tables.source_rows()
    assert output_metadata(first, "load")["rows"] == 5
    assert tables.watermark() == Watermark(at(5), 5)

    tables.write((2, "c2-renamed", 250, at(30)), (6, "c6", 600, at(31)))
    second = tables.run()

    assert second.success, failure_text(second)
    assert output_metadata(second, "load")["rows"] == 2  # only the changed and the new row
    assert tables.destination_rows() == tables.source_rows()
    assert tables.watermark() == Watermark(at(31), 6)


def test_a_rerun_is_idempotent(tables):
    tables.write(*[(i, f"c{i}", i, at(i)) for i in range(1, 4)])
    assert tables.run().success
    synced = tables.destination_rows()

    again = tables.run()

    assert again.success
    assert output_metadata(again, "load")["rows"] == 0
    assert tables.destination_rows() == synced

    # The watermark lost (a restored destination, say): the same rows are upserted again, not duplicated.
    with tables.destination_engine.begin() as connection:
        connection.execute(
            sa.text("DELETE FROM offload_sync_watermarks WHERE name = :n"), {"n": tables.destination_name}
        )
    replay = tables.run()

    assert replay.success
    assert output_metadata(replay, "load")["rows"] == 3
    assert tables.destination_rows() == synced == tables.source_rows()


def test_rows_sharing_a_timestamp_across_batches_are_each_loaded_once(tables):
    tables.write(*[(i, f"c{i}", i, at(1)) for i in range(1, 6)])  # one timestamp for all five

    loads = []
    for _ in range(3):
        result = tables.run(max_rows=2)
        assert result.success, failure_text(result)
        loads.append(
            (output_metadata(result, "load")["rows"], output_metadata(result, "load")["more_waiting"])
        )

    assert loads == [(2, True), (2, True), (1, False)]
    assert tables.destination_rows() == tables.source_rows()
    assert tables.watermark() == Watermark(at(1), 5)


def test_a_load_failing_midway_changes_nothing_and_the_next_run_loads_it_all(tables):
    # The destination refuses negative amounts; the third row (by timestamp) has one.
    with tables.destination_engine.begin() as connection:
        connection.exec_driver_sql(
            f"CREATE TABLE {tables.destination_name} (id INTEGER PRIMARY KEY, customer VARCHAR(64) NOT NULL, "
            f"amount INTEGER NOT NULL CHECK (amount >= 0), updated_at TIMESTAMP)"
        )
    tables.write(*[(i, f"c{i}", -1 if i == 3 else i, at(i)) for i in range(1, 6)])

    failed = tables.run()

    assert not failed.success
    assert "load: IntegrityError" in failure_text(failed)
    assert tables.destination_rows() == []  # rows 1 and 2 were not kept either: one transaction
    assert tables.watermark() is None

    tables.write((3, "c3", 3, at(3)))  # fixed at the source
    fixed = tables.run()

    assert fixed.success, failure_text(fixed)
    assert tables.destination_rows() == tables.source_rows()
    assert tables.watermark() == Watermark(at(5), 5)


def test_a_failure_after_an_earlier_load_keeps_the_earlier_watermark(tables):
    with tables.destination_engine.begin() as connection:
        connection.exec_driver_sql(
            f"CREATE TABLE {tables.destination_name} (id INTEGER PRIMARY KEY, customer VARCHAR(64) NOT NULL, "
            f"amount INTEGER NOT NULL CHECK (amount >= 0), updated_at TIMESTAMP)"
        )
    tables.write((1, "c1", 1, at(1)), (2, "c2", 2, at(2)))
    assert tables.run().success
    tables.write((3, "c3", 3, at(3)), (4, "c4", -4, at(4)), (5, "c5", 5, at(5)))

    failed = tables.run()

    assert not failed.success
    assert tables.watermark() == Watermark(at(2), 2)
    assert [row[0] for row in tables.destination_rows()] == [1, 2]

    tables.write((4, "c4", 4, at(6)))
    assert tables.run().success
    assert tables.destination_rows() == tables.source_rows()


def test_a_stale_load_is_refused_when_another_run_moved_the_watermark(tables):
    tables.write((1, "c1", 1, at(1)), (2, "c2", 2, at(2)))
    source = SqlTable(url=tables.source_url, table=tables.source_name)
    destination = SqlTable(url=tables.destination_url, table=tables.destination_name)
    like = source.reflect()
    rows, _ = source.changes_after("updated_at", "id", None, 10)
    destination.load(rows, "id", like, None, Watermark(at(2), 2))  # the other run

    with pytest.raises(WatermarkMoved, match="another run loaded first"):
        destination.load([{**rows[0], "amount": 999}], "id", like, None, Watermark(at(1), 1))

    assert destination.watermark() == Watermark(at(2), 2)
    assert [row[2] for row in tables.destination_rows()] == [1, 2]
    destination.engine().dispose()
    source.engine().dispose()


def test_steps_log_structured_lines(tmp_path):
    tables = Tables(f"sqlite:///{tmp_path / 's.db'}", f"sqlite:///{tmp_path / 'd.db'}")
    tables.write((1, "c1", 1, at(1)), (2, "c2", 2, at(2)))
    instance = dg.DagsterInstance.ephemeral()

    result = data_pipeline.execute_in_process(
        run_config=PAYLOAD, resources=tables.resources(), instance=instance
    )

    lines = {}
    for record in instance.all_logs(result.run_id):
        message, _, fields = record.user_message.partition(" {")
        if not record.is_dagster_event and fields:
            lines[message] = json.loads("{" + fields)
    assert lines["extracted"]["rows"] == 2
    assert lines["extracted"]["scheduled_for"] == PAYLOAD["timestamp"]
    assert lines["transformed"] == {"rows": 2, "keys": 2}
    assert lines["loaded"]["rows_upserted"] == 2
    assert lines["loaded"]["until"] == {"cursor": str(at(2)), "key": "2"}
    tables.dispose()


def test_a_non_unique_source_key_fails_in_transform(tmp_path):
    source_url = f"sqlite:///{tmp_path / 's.db'}"
    engine = create_engine(source_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE events (id INTEGER, name TEXT, updated_at TIMESTAMP)")
        connection.exec_driver_sql(
            "INSERT INTO events VALUES (1, 'a', '2026-03-01 12:00:00'), (1, 'b', '2026-03-01 12:01:00')"
        )
    engine.dispose()
    resources = {
        "sync_source": SqlTable(url=source_url, table="events"),
        "sync_destination": SqlTable(url=f"sqlite:///{tmp_path / 'd.db'}", table="events"),
    }

    result = data_pipeline.execute_in_process(run_config=PAYLOAD, resources=resources, raise_on_error=False)

    assert not result.success
    assert "transform: ValueError: id=1 appears twice" in failure_text(result)
    assert resources["sync_destination"].watermark() is None


def test_sqlite_into_postgres(tmp_path, postgres_url):
    tables = Tables(f"sqlite:///{tmp_path / 'source.db'}", postgres_url)
    tables.write(*[(i, f"c{i}", i, at(i)) for i in range(1, 4)])

    result = tables.run()

    assert result.success, failure_text(result)
    assert tables.destination_rows() == tables.source_rows()
    with tables.destination_engine.connect() as connection:
        columns = {c["name"]: c["type"] for c in sa.inspect(connection).get_columns(tables.destination_name)}
    assert isinstance(columns["updated_at"], sa.DateTime)
    tables.dispose()


def test_a_missing_source_setting_is_one_line(tmp_path):
    resources = {
        "sync_source": SqlTable(url_variable="OFFLOAD_SYNC_SOURCE_URL"),
        "sync_destination": SqlTable(url=f"sqlite:///{tmp_path / 'd.db'}", table="t"),
    }
    result = data_pipeline.execute_in_process(run_config=PAYLOAD, resources=resources, raise_on_error=False)

    assert not result.success
    assert "OFFLOAD_SYNC_SOURCE_URL is not set: set it to a SQLAlchemy database URL" in failure_text(result)
    assert len(result.get_step_failure_events()) == 1  # a setting does not appear by retrying


def test_watermark_json_keeps_types():
    for mark in (
        Watermark(dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC), 7),
        Watermark(42, "a"),
        Watermark(T0, "k"),
    ):
        assert Watermark.from_json(mark.to_json()) == mark
    assert json.loads(Watermark(T0, 1).to_json())["cursor"] == {"datetime": "2026-03-01T12:00:00"}


@pytest.mark.parametrize("destination", ["sqlite", "postgres"])
def test_values_are_copied_as_they_are(tmp_path, postgres_url, destination):
    """A SQL NULL in a JSON column stays NULL (not the JSON text ``null``), and a timestamp keeps its instant
    though the Postgres source's session runs in New York (5 hours behind UTC in March)."""
    source_url = f"{postgres_url}?options=-c%20TimeZone%3DAmerica%2FNew_York"
    destination_url = f"sqlite:///{tmp_path / 'destination.db'}" if destination == "sqlite" else postgres_url
    suffix = uuid.uuid4().hex[:8]
    source, copy = f"events_{suffix}", f"events_copy_{suffix}"
    source_engine, destination_engine = create_engine(source_url), create_engine(destination_url)
    table = sa.Table(
        source,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("data", sa.JSON),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
    )
    table.create(source_engine)
    instant = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    with source_engine.begin() as connection:
        connection.execute(
            sa.insert(table),
            [
                {"id": 1, "data": sa.null(), "updated_at": instant},
                {"id": 2, "data": {"plan": "pro"}, "updated_at": instant + dt.timedelta(minutes=1)},
            ],
        )
        # the source session really is in New York: it hands the instant back at 07:00-05:00
        assert connection.scalar(sa.select(table.c.updated_at).where(table.c.id == 1)).hour == 7
    resources = {
        "sync_source": SqlTable(url=source_url, table=source),
        "sync_destination": SqlTable(url=destination_url, table=copy),
    }

    result = data_pipeline.execute_in_process(run_config=PAYLOAD, resources=resources, raise_on_error=False)

    assert result.success, failure_text(result)
    with destination_engine.connect() as connection:
        rows = connection.exec_driver_sql(
            f"SELECT id, data IS NULL, CAST(data AS TEXT) FROM {copy} ORDER BY id"
        ).all()
        stored = sa.Table(copy, sa.MetaData(), autoload_with=connection)
        times = connection.execute(sa.select(stored.c.updated_at).order_by(stored.c.id)).scalars().all()
    assert [(i, bool(null), text) for i, null, text in rows] == [
        (1, True, None),
        (2, False, '{"plan": "pro"}'),
    ]
    # SQLite keeps naive UTC; Postgres an aware instant: either way the same instants as the source
    assert [_naive(t) for t in times] == [_naive(instant), _naive(instant + dt.timedelta(minutes=1))]
    source_engine.dispose()
    destination_engine.dispose()
