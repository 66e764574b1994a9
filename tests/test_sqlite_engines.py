"""offload/runtime/sqlite_engines.py: a run worker keeps one connection per SQLite file, its events still
reach the file the Dagster UI watches one by one, and nothing committed is lost when the worker is killed.

Each case runs in a process of its own: holding connections is a property of the process that asks for it.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from offload import paths

SCRIPT = textwrap.dedent(
    """
    import json, os, sqlite3, sqlite3.dbapi2, sys
    home, mode, events = sys.argv[1], sys.argv[2], int(sys.argv[3])
    opened = []
    _connect = sqlite3.connect
    def counting_connect(database, *args, **kwargs):
        opened.append(os.path.basename(str(database)))
        return _connect(database, *args, **kwargs)
    sqlite3.connect = sqlite3.dbapi2.connect = counting_connect  # SQLAlchemy calls the latter

    import dagster as dg
    from dagster._core.instance.ref import InstanceRef
    from offload.runtime import sqlite_engines
    from offload.runtime.instance import ensure_config

    from pathlib import Path
    ensure_config(Path(home))
    if mode != "per-event":
        sqlite_engines.hold_connections()
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(home))
    run = dg.DagsterRun(job_name="held", run_id="r" * 8 + "-0000-0000-0000-" + "0" * 12)
    instance.add_run(run)
    log = os.path.join(home, "history", "runs", run.run_id + ".db")
    seen_in_file = []
    for n in range(events):
        instance.report_engine_event(f"event {n}", run)
        # The main file alone (immutable: no WAL, no locks), as a watcher of the file would find it.
        with _connect(f"file:{log}?immutable=1", uri=True) as main_file:
            texts = [row[0] for row in main_file.execute("select event from event_logs")]
        seen_in_file.append(sum(f"event {n}" in text for text in texts))
    print(json.dumps({"opened": opened.count(run.run_id + ".db"), "seen": seen_in_file}), flush=True)
    if mode == "held-killed":
        os.kill(os.getpid(), 9)
    sqlite_engines.close_all()
    """
)


def run_script(home: Path, mode: str, events: int) -> tuple[dict, int]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(home), mode, str(events)],
        cwd=paths.PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stderr[-3000:]
    return json.loads(lines[-1]), done.returncode


def stored_events(home: Path) -> list[str]:
    (log,) = (home / "history" / "runs").glob("r*.db")
    with sqlite3.connect(log) as connection:  # an ordinary reader: the WAL included
        return [row[0] for row in connection.execute("select event from event_logs order by id")]


def test_a_holding_process_opens_a_file_once_and_each_event_reaches_the_watched_file(tmp_path):
    found, code = run_script(tmp_path, "held", 12)
    assert code == 0
    assert 1 <= found["opened"] <= 2  # one held (two if Dagster's schema check opened its own)
    assert found["seen"] == [1] * 12  # every event in <run>.db itself as soon as it was stored
    assert not list((tmp_path / "history" / "runs").glob("*.db-wal"))  # closed at exit: checkpointed


def test_without_holding_each_event_opens_the_file_again(tmp_path):
    found, code = run_script(tmp_path, "per-event", 12)
    assert code == 0
    assert found["opened"] >= 12  # the behaviour a holding worker saves
    assert found["seen"] == [1] * 12


def test_a_holding_process_killed_loses_no_committed_event(tmp_path):
    found, code = run_script(tmp_path, "held-killed", 8)
    assert code == -signal.SIGKILL
    assert found["seen"] == [1] * 8
    texts = stored_events(tmp_path)
    assert all(any(f"event {n}" in text for text in texts) for n in range(8))
