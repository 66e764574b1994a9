"""offload/runtime/forkserver.py with real processes: a run worker forked from the preloaded server executes
a real
run of a code location in a temporary directory, runs the code on disk after an edit (the server is
replaced, not serving the module it preloaded), and keeps running when the server stops, which it does at
once; a server whose preload raises makes the fork fail at once."""

import json
from pathlib import Path

import dagster as dg
import psutil
import pytest
from dagster._core.definitions.reconstruct import ReconstructableJob
from dagster._grpc.types import ExecuteRunArgs

from benchmarks.support.dagster_deployment import finished
from benchmarks.support.waiting import wait_for
from offload.runtime import forkserver
from offload.runtime.forkserver import ForkServer, code_fingerprint, shared

# A code location whose job writes its module's VERSION (and waits for a gate file when asked to).
LOCATION = """
import os
import time
from pathlib import Path

import dagster as dg

VERSION = {version}


@dg.op(config_schema={{"out": str, "gate": str}})
def report(context):
    gate = Path(context.op_config["gate"])
    while context.op_config["gate"] and not gate.exists():
        time.sleep(0.05)
    Path(context.op_config["out"]).write_text(str(VERSION) + os.environ.get("FORKSERVER_TEST_SUFFIX", ""))


@dg.job(executor_def=dg.in_process_executor)
def versioned():
    report()
"""


@pytest.fixture
def location(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "versioned_location.py").write_text(LOCATION.format(version=1))
    return code


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)) as opened:
        yield opened


@pytest.fixture
def server(location):
    server = ForkServer(str(location), ["dagster", "versioned_location"])
    yield server
    server.stop()


def start(server: ForkServer, instance: dg.DagsterInstance, location: Path, out: Path, gate: str = "") -> str:
    """Create a run of ``versioned`` and fork its worker; the run id (the worker's pid: ``started``)."""
    recon = ReconstructableJob.for_file(str(location / "versioned_location.py"), "versioned")
    run = instance.create_run_for_job(
        recon.get_definition(),
        run_config={"ops": {"report": {"config": {"out": str(out), "gate": gate}}}},
        job_code_origin=recon.get_python_origin(),
    )
    pid = server.start_worker(ExecuteRunArgs(job_origin=recon.get_python_origin(), run_id=run.run_id,
                                             instance_ref=instance.get_ref()))  # fmt: skip
    started.append(pid)
    return run.run_id


started: list[int] = []  # the pids start_worker returned, in order


def run_to_end(server, instance, location, out: Path) -> str:
    run_id = start(server, instance, location, out)
    run = wait_for(lambda: finished(instance, run_id), 120, "the forked run to finish")
    assert run.status == dg.DagsterRunStatus.SUCCESS
    return out.read_text()


def test_a_forked_worker_runs_the_code_on_disk_after_an_edit(server, instance, location, tmp_path):
    assert run_to_end(server, instance, location, tmp_path / "first") == "1"
    (location / "versioned_location.py").write_text(LOCATION.format(version=2))
    assert run_to_end(server, instance, location, tmp_path / "second") == "2"  # not the preloaded 1


def test_a_server_whose_preload_raises_fails_the_fork_instead_of_hanging(instance, location, tmp_path):
    """The launcher then starts the run Dagster's way, which reports the broken code as a stock run would."""
    (location / "broken_location.py").write_text("raise RuntimeError('broken at import')\n")
    server = ForkServer(str(location), ["broken_location"])
    try:
        with pytest.raises(EOFError, match="the fork server exited"):
            start(server, instance, location, tmp_path / "out")
    finally:
        server.stop()


def test_fingerprint_changes_with_package_code_only(location):
    before = code_fingerprint(str(location))
    (location / "data").mkdir()
    (location / "data" / "notes.py").write_text("x = 1\n")  # not a package: never imported as code
    assert code_fingerprint(str(location)) == before
    (location / "data" / "__init__.py").write_text("")
    assert code_fingerprint(str(location)) != before


def test_the_server_stops_at_once_and_its_worker_goes_on(server, instance, location, tmp_path):
    gate = tmp_path / "gate"
    run_id = start(server, instance, location, tmp_path / "out", gate=str(gate))
    wait_for(lambda: instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED, 120,
             "the run to start")  # fmt: skip
    (running,) = servers()
    server.stop()
    # Gone (and reaped) while its worker still waits for the gate: a restart never waits for a run.
    wait_for(lambda: not psutil.pid_exists(running.pid), 10, "the server to exit")
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
    gate.touch()
    run = wait_for(lambda: finished(instance, run_id), 60, "the run to finish after the server stopped")
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert (tmp_path / "out").read_text() == "1"


def servers() -> list[psutil.Process]:
    """This process's running fork servers."""
    return [p for p in psutil.Process().children() if "offload.runtime.forkserver" in " ".join(p.cmdline())]


def test_warming_in_the_background_makes_the_server_warm_and_an_edit_makes_it_cold(server, location):
    """The run coordinator starts a run at once only on a warm server (offload/runtime/coordinator.py)."""
    assert not server.is_warm()
    server.warm_in_background()
    server.warm_in_background()  # a second call while warming starts nothing more
    wait_for(lambda: server.is_warm() or None, 120, "the server to finish its preload")
    assert len(servers()) == 1
    (location / "versioned_location.py").write_text(LOCATION.format(version=2))
    assert not server.is_warm()  # would import the edit first: not warm until replaced


def test_one_server_per_process_for_one_code_location(location, tmp_path):
    first = shared(str(location), ["dagster", "versioned_location"])
    assert shared(str(location) + "/", ["dagster", "versioned_location"]) is first
    assert shared(str(tmp_path), ["dagster"]) is not first


# A step that prints, on both streams and from a subprocess, and records its worker's own child processes.
PRINTING = """
import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import psutil


@dg.op(config_schema={"out": str})
def chatty(context):
    print("to stdout from the step", flush=True)
    print("to stderr from the step", file=sys.stderr, flush=True)
    subprocess.run(["sh", "-c", "echo to stderr from a subprocess >&2"], check=True)
    worker = psutil.Process()
    names = [child.name() for child in worker.children()]
    Path(context.op_config["out"]).write_text(json.dumps(names))


@dg.job(executor_def=dg.in_process_executor)
def printing():
    chatty()
"""


def test_a_forked_workers_step_output_reaches_its_compute_logs_without_echo_processes(tmp_path):
    """offload/runtime/compute_logs.py: what a step prints (and its subprocesses) is in the files the UI
    shows, and the worker starts none of the tail and watcher processes Dagster's manager adds per step."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "printing_location.py").write_text(PRINTING)
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\ncompute_logs:\n  module: offload.runtime.compute_logs\n"
        "  class: OffloadComputeLogManager\n"
    )
    server = ForkServer(str(code), ["dagster", "printing_location"])
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            recon = ReconstructableJob.for_file(str(code / "printing_location.py"), "printing")
            out = tmp_path / "children.json"
            run = instance.create_run_for_job(
                recon.get_definition(),
                run_config={"ops": {"chatty": {"config": {"out": str(out)}}}},
                job_code_origin=recon.get_python_origin(),
            )
            server.start_worker(ExecuteRunArgs(job_origin=recon.get_python_origin(), run_id=run.run_id,
                                               instance_ref=instance.get_ref()))  # fmt: skip
            done = wait_for(lambda: finished(instance, run.run_id), 120, "the forked run to finish")
            assert done.status == dg.DagsterRunStatus.SUCCESS
            assert json.loads(out.read_text()) == []  # no tail, no watcher: only the step's own (ended) sh
            captured = [
                entry.dagster_event.logs_captured_data
                for entry in instance.all_logs(run.run_id)
                if entry.dagster_event is not None and entry.dagster_event.event_type_value == "LOGS_CAPTURED"
            ]
            assert len(captured) == 1
            manager = instance.compute_log_manager
            key = [run.run_id, "compute_logs", captured[0].file_key]
            stdout = manager.get_log_data(key).stdout or b""
            stderr = manager.get_log_data(key).stderr or b""
            assert b"to stdout from the step" in stdout
            assert b"to stderr from the step" in stderr and b"to stderr from a subprocess" in stderr
            assert manager.is_capture_complete(key)
            assert str(home / "storage") in str(manager.get_captured_local_path(key, "out"))
    finally:
        server.stop()


def idle_children(server: ForkServer) -> list[int]:
    """The server's children that are not one of the workers it has handed out (its standby)."""
    assert server._server is not None
    children = psutil.Process(server._server.pid).children()
    return [c.pid for c in children if c.pid not in started and c.status() != psutil.STATUS_ZOMBIE]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_next_worker_waits_ready_and_reads_a_changed_env_file(server, instance, location, tmp_path):
    """After a request the server forks a standby worker that opens the instance before its run comes; the
    next request is handed to it (its pid is the one returned), and it runs that run. A ``.env`` edited in
    between is read, as a worker forked on demand reads it. The standby exits with the server."""
    assert run_to_end(server, instance, location, tmp_path / "first") == "1"
    (standby,) = wait_for(lambda: idle_children(server) or None, 30, "a standby worker")
    assert psutil.Process(standby).name() == forkserver.STANDBY_NAME  # ps tells it from a worker
    assert run_to_end(server, instance, location, tmp_path / "second") == "1"
    assert started[-1] == standby  # the run went to the worker that was waiting for it
    (standby,) = wait_for(lambda: idle_children(server) or None, 30, "the next standby worker")
    (location / ".env").write_text("FORKSERVER_TEST_SUFFIX=-from-env\n")
    assert run_to_end(server, instance, location, tmp_path / "third") == "1-from-env"
    assert started[-1] == standby
    (standby,) = wait_for(lambda: idle_children(server) or None, 30, "the next standby worker")
    server.stop()
    wait_for(lambda: gone(standby), 10, "the standby to exit with its server")
