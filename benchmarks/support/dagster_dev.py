"""A real ``offload dev`` (webserver, daemon, code server) for tests and benchmarks needing the whole system.

``DagsterDev(home, workspace)`` writes ``home/dagster.yaml`` from offload's own instance settings with
short intervals (run monitoring and the run queue every second), starts ``offload dev`` on a free loopback
port in its own session (so it can be stopped, or crashed, as one process group) with a data directory
of its own (``OFFLOAD_DATA_DIR`` beside the home: work files and storage never land in the project's
``var/``), and waits until the code location is loaded and the daemons that crash-resume relies on report
healthy. ``kill_everything()`` is
``kill -9`` of the whole tree, run workers included; ``start()`` again is the restart.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import yaml
from dagster_graphql import DagsterGraphQLClient

from benchmarks.support.waiting import free_port, wait_for
from offload import paths
from offload.runtime import instance

# How fast the test instance reacts; the product defaults are in deploy/instance-common.yaml.
FAST = {
    "run_monitoring": {"poll_interval_seconds": 1},
    "run_launcher": {"config": {"terminate_grace_seconds": 2}},
    "run_coordinator": {"config": {"dequeue_interval_seconds": 1}},
}
NEEDED_DAEMONS = {"MONITORING", "QUEUED_RUN_COORDINATOR", "EVENT_LOG_CONSUMER"}
READY_QUERY = """
{
  workspaceOrError { ... on Workspace { locationEntries { name loadStatus
      locationOrLoadError { __typename ... on PythonError { message } } } } }
  instance { daemonHealth { allDaemonStatuses { daemonType healthy } } }
}
"""


class DagsterDev:
    def __init__(self, home: Path, workspace: Path, log: Path, fast: bool = True, **overrides: Any) -> None:
        """``fast=False`` keeps the product's intervals (deploy/instance-common.yaml, Dagster's defaults)."""
        self.home, self.workspace, self.log, self.fast = home, workspace, log, fast
        self.data_dir = home.parent / "data"  # OFFLOAD_DATA_DIR of every process: work files, storage
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.ready_at = 0.0  # when the last start() found it ready (epoch seconds)
        home.mkdir(parents=True, exist_ok=True)
        overrides = instance.merge(FAST, overrides) if fast else overrides
        (home / "dagster.yaml").write_text(yaml.safe_dump(instance.embedded_config(**overrides)))

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OFFLOAD_", "DAGSTER_"))}
        # Code-server sockets and temporary workspaces go beside the home: a killed tree litters no /tmp.
        scratch = self.home.parent / "tmp"
        scratch.mkdir(exist_ok=True)
        env |= {
            "DAGSTER_HOME": str(self.home),
            "TMPDIR": str(scratch),
            "OFFLOAD_DATA_DIR": str(self.data_dir),
        }
        if self.fast:  # the run-retry daemon's interval is only settable this way (default 5 s)
            env["DAGSTER_EVENT_LOG_CONSUMER_DAEMON_INTERVAL_SECONDS"] = "1"
        return env

    def start(self, timeout: float = 120) -> float:
        """Start ``offload dev`` and wait until it can run jobs; returns the start time (epoch seconds)."""
        self.port = free_port()
        started = time.time()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [Path(sys.executable).with_name("offload"), "dev", "-w", self.workspace,
                 "-p", str(self.port), "-h", "127.0.0.1"],
                cwd=paths.PROJECT_ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_for(self._ready, timeout, f"offload dev to be ready (log: {self.log})", interval=0.5)
        self.ready_at = time.time()
        return started

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(
                f"offload dev exited with {self.process.returncode}: {self.log.read_text()[-3000:]}"
            )
        try:
            reply = httpx.post(
                f"http://127.0.0.1:{self.port}/graphql", json={"query": READY_QUERY}, timeout=5
            )
            data = reply.json()["data"]
        except (httpx.HTTPError, ValueError, KeyError):
            return False
        if data is None:  # a GraphQL error while the webserver starts (its storage still busy): ask again
            return False
        entries = data["workspaceOrError"].get("locationEntries") or []
        for entry in entries:
            if entry["locationOrLoadError"] and entry["locationOrLoadError"]["__typename"] == "PythonError":
                raise RuntimeError(f"code location failed to load: {entry['locationOrLoadError']['message']}")
        loaded = bool(entries) and all(entry["loadStatus"] == "LOADED" for entry in entries)
        statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        healthy = {status["daemonType"] for status in statuses if status["healthy"]}
        return loaded and healthy >= NEEDED_DAEMONS

    def client(self) -> DagsterGraphQLClient:
        return DagsterGraphQLClient("127.0.0.1", port_number=self.port)

    def kill_everything(self) -> None:
        """``kill -9`` of the whole tree: CLI, webserver, daemon, code server and run workers."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill_everything()
        elif self.process is not None:  # the CLI is gone: make sure nothing else of its group lives on
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)


def submit(
    dev: DagsterDev, scratch: Path, job: str, ops: dict[str, Any], execution: dict[str, Any] | None = None
) -> str:
    """Launch a job of tests/crash_location.py through GraphQL with its scratch directory (and the
    executor's config, ``execution``)."""
    scratch.mkdir(parents=True, exist_ok=True)
    config = {"resources": {"scratch": {"config": {"root": str(scratch)}}}, "ops": ops}
    if execution is not None:
        config["execution"] = {"config": execution}
    return dev.client().submit_job_execution(job, repository_location_name="crash_tests", run_config=config)


def step_log(scratch: Path) -> list[str]:
    """The steps that started, in order, as tests/crash_location.py records them."""
    log = scratch / "steps.log"
    return log.read_text().splitlines() if log.exists() else []


def finished(instance_: dg.DagsterInstance, run_id: str) -> dg.DagsterRun | None:
    run = instance_.get_run_by_id(run_id)
    assert run is not None, run_id
    return run if run.is_finished else None
