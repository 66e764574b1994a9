"""New runs' SQLite event log files copied from a template (offload/runtime/event_log_files.py): the copy
has Dagster's own schema and alembic revision, events go in and come out, and a file that exists already
(made by another process) is kept, not overwritten."""

import sqlite3
import uuid
from pathlib import Path

import dagster as dg

from offload.runtime import event_log_files


def _schema(path: Path) -> tuple[list[tuple[str, str]], list[tuple[str]]]:
    with sqlite3.connect(path) as db:
        objects = db.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY 2")
        return objects.fetchall(), db.execute("SELECT version_num FROM alembic_version").fetchall()


@dg.op
def nothing() -> None:
    pass


@dg.job
def noop() -> None:
    nothing()


def _enqueue(instance: dg.DagsterInstance, name: str) -> str:
    run_id = str(uuid.uuid5(uuid.NAMESPACE_URL, name))
    run = instance.create_run_for_job(noop, run_id=run_id)
    instance.report_engine_event("first event", run)
    return run_id


def test_a_copied_event_log_is_dagsters_own(tmp_path):
    (tmp_path / "stock").mkdir()
    (tmp_path / "copied").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "stock")) as stock:
        stock_id = _enqueue(stock, "stock")
        expected = _schema(tmp_path / "stock" / "history" / "runs" / f"{stock_id}.db")
    event_log_files.install()
    with dg.instance_for_test(temp_dir=str(tmp_path / "copied")) as instance:
        runs = tmp_path / "copied" / "history" / "runs"
        first, second = _enqueue(instance, "first"), _enqueue(instance, "second")
        assert _schema(runs / f"{first}.db") == expected
        assert _schema(runs / f"{second}.db") == expected
        logs = instance.all_logs(second)
        assert [entry.dagster_event.event_type_value for entry in logs] == ["ENGINE_EVENT"]
        assert not list(runs.glob("*.tmp"))
        assert event_log_files._template is not None  # the files were copied from it


def test_an_existing_event_log_file_is_kept(tmp_path):
    event_log_files.install()
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        runs = tmp_path / "history" / "runs"
        made = _enqueue(instance, "made")
        before = (runs / f"{made}.db").stat().st_ino
        event_log_files._place(str(runs / f"{made}.db"), b"not a database")
        assert (runs / f"{made}.db").stat().st_ino == before
        assert len(instance.all_logs(made)) == 1
