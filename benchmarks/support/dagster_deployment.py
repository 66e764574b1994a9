"""A real Dagster deployment for tests and benchmarks: ``dagster dev`` or ``offload dev`` (webserver,
daemon and code server) on a free loopback port, with a DAGSTER_HOME and an ``OFFLOAD_DATA_DIR`` of its
own, so work files and storage never land in the project's ``var/``.

This is the one module that runs a whole deployment. ``services.py`` runs single processes (the daemon
alone, the webhook gateway, Celery workers) when a test needs them apart; ``postgres.py`` makes the
throwaway databases a deployment may store in.

The instance config starts from offload's embedded one (``offload.runtime.instance.embedded_config()``,
the one source of truth) and may swap storage (Postgres), shrink the per-level slots, or (``fast=True``)
poll every second, as the crash tests need. The deployment runs in its own process group
(``start_new_session``: Dagster maps SIGTERM to SIGINT, which background processes started without job
control ignore): ``stop()`` interrupts that group by its id, then kills what is left; ``kill_everything()``
is ``kill -9`` of the whole tree, run workers included, and ``start()`` again is the restart. Ready means:
every code location is loaded (a load error fails at once), its jobs are listed, and the daemons the
caller relies on report healthy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import httpx
import psutil
import yaml
from dagster_graphql import DagsterGraphQLClient

from benchmarks.support.waiting import free_port, wait_for
from offload import paths
from offload.runtime import forkserver, instance

BIN = Path(sys.executable).parent
CRASH_WORKSPACE = paths.PROJECT_ROOT / "tests" / "crash_workspace.yaml"  # tests/crash_location.py
# How fast a ``fast`` instance reacts; the product defaults are in deploy/instance-common.yaml.
FAST = {
    "run_monitoring": {"poll_interval_seconds": 1},
    "run_launcher": {"config": {"terminate_grace_seconds": 2}},
    "run_coordinator": {"config": {"dequeue_interval_seconds": 1}},
}
QUEUE_DAEMONS = frozenset({"QUEUED_RUN_COORDINATOR"})
CRASH_RESUME_DAEMONS = frozenset({"MONITORING", "QUEUED_RUN_COORDINATOR", "EVENT_LOG_CONSUMER"})
READY_QUERY = """
{
  workspaceOrError { ... on Workspace { locationEntries { name loadStatus
      locationOrLoadError { __typename ... on PythonError { message } } } } }
  repositoriesOrError { ... on RepositoryConnection { nodes { pipelines { name } } } }
  instance { daemonHealth { allDaemonStatuses { daemonType healthy } } }
}
"""


def instance_yaml(
    storage: Mapping[str, Any] | None = None,
    level_slots: int | None = None,
    fast: bool = False,
    **overrides: Any,
) -> str:
    """offload's embedded instance config, with ``storage`` (e.g. Postgres) and ``level_slots`` swapped
    in, the ``FAST`` intervals when ``fast``, and ``overrides`` laid over it."""
    config = instance.embedded_config(**(instance.merge(FAST, overrides) if fast else overrides))
    if storage is not None:
        config["storage"] = dict(storage)
    if level_slots is not None:
        for rule in config["run_coordinator"]["config"]["tag_concurrency_limits"]:
            if rule["key"] == "offload/depth":
                rule["limit"] = level_slots
    return yaml.safe_dump(config, sort_keys=False)


def postgres_storage(url: str) -> dict[str, Any]:
    return {"postgres": {"postgres_url": url}}


def production_env(url: str, root: Path) -> dict[str, str]:
    """What deploy/dagster.yaml reads from the environment, for the database at ``url`` (a
    ``postgres.temporary_database`` URL) and compute logs under ``root``. The local server trusts
    loopback, so the password is never checked; it is set because production sets it."""
    parts = urlsplit(url)
    return {
        "DAGSTER_PG_HOST": parts.hostname or "",
        "DAGSTER_PG_PORT": str(parts.port),
        "DAGSTER_PG_USER": parts.username or "",
        "DAGSTER_PG_PASSWORD": "unused-with-trust-auth",
        "DAGSTER_PG_DB": parts.path.lstrip("/"),
        "DAGSTER_COMPUTE_LOG_DIR": str(root / "compute_logs"),
    }


def production_home(root: Path) -> Path:
    """A DAGSTER_HOME under ``root`` holding the committed production instance file, unchanged."""
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(instance.PRODUCTION_FILE.read_text())
    return home


class DagsterDeployment:
    """``<cli> dev`` for this project under ``root`` (``root/home``, ``root/data``, ``root/dagster-dev.log``).

    ``instance`` is the dagster.yaml text (default: ``instance_yaml(fast=fast)``); ``workspace`` the
    workspace file (default: the project's workspace.yaml); ``cli`` ``"dagster"`` or ``"offload"`` (the
    UI behind offload/runtime/ui_guard.py); ``env`` is laid over the services' environment; ``daemons``
    must report healthy before it counts as ready; ``own_tmp`` puts TMPDIR (code-server sockets, temporary
    workspaces) under ``root``, so a killed tree litters no /tmp.
    """

    def __init__(
        self,
        root: Path,
        *,
        instance: str | None = None,
        workspace: Path | None = None,
        cli: str = "dagster",
        env: Mapping[str, str] | None = None,
        fast: bool = False,
        daemons: Iterable[str] = QUEUE_DAEMONS,
        own_tmp: bool = False,
    ) -> None:
        self.root, self.workspace, self.cli, self.fast = root, workspace, cli, fast
        self.home, self.data_dir, self.log = root / "home", root / "data", root / "dagster-dev.log"
        self.extra_env, self.daemons, self.own_tmp = dict(env or {}), frozenset(daemons), own_tmp
        self.home.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.home / "dagster.yaml").write_text(
            instance if instance is not None else instance_yaml(fast=fast)
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.env: dict[str, str] = {}
        self.ready_at = 0.0  # when the last start() found it ready (epoch seconds)

    @property
    def pid(self) -> int:
        """The ``dagster dev`` process's pid (the leader of its process group); the deployment is started."""
        assert self.process is not None, "the deployment is not started"
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OFFLOAD_", "DAGSTER_"))}
        env |= {
            "DAGSTER_HOME": str(self.home),
            "OFFLOAD_DATA_DIR": str(self.data_dir),
            "OFFLOAD_DAGSTER_URL": self.url,  # child runs reach the webserver through the client
        }
        if self.own_tmp:
            scratch = self.root / "tmp"
            scratch.mkdir(exist_ok=True)
            env["TMPDIR"] = str(scratch)
        if self.fast:  # the run-retry daemon's interval is only settable this way (default 5 s)
            env["DAGSTER_EVENT_LOG_CONSUMER_DAEMON_INTERVAL_SECONDS"] = "1"
        return env | self.extra_env

    def start(self, timeout: float = 120.0) -> float:
        """Start the deployment on a new free port and wait until it can run jobs; returns the start time
        (epoch seconds). On failure it is stopped before the error propagates."""
        self.port = free_port()
        self.env = self._environment()
        started = time.time()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(BIN / self.cli), "dev", "-w", str(self.workspace or "workspace.yaml"),
                 "-h", "127.0.0.1", "-p", str(self.port)],
                cwd=paths.PROJECT_ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        try:
            wait_for(self._ready, timeout, f"{self.cli} dev to be ready", 0.5, self._tail)
        except BaseException:
            self.stop()
            raise
        self.ready_at = time.time()
        return started

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.cli} dev exited with {self.process.returncode}: {self._tail()}")
        try:
            reply = httpx.post(f"{self.url}/graphql", json={"query": READY_QUERY}, timeout=5)
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
        jobs = [job for repo in data["repositoriesOrError"].get("nodes", []) for job in repo["pipelines"]]
        statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        healthy = {status["daemonType"] for status in statuses if status["healthy"]}
        return loaded and bool(jobs) and healthy >= self.daemons

    def client(self) -> DagsterGraphQLClient:
        return DagsterGraphQLClient("127.0.0.1", port_number=self.port)

    def kill_everything(self) -> None:
        """``kill -9`` of the whole tree: CLI, webserver, daemon, code server and run workers."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """Interrupt the whole process group, then kill what is left of it (code server, run workers)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def start(
    root: Path,
    *,
    instance: str | None = None,
    env: Mapping[str, str] | None = None,
    deadline: float = 120.0,
    workspace: Path | None = None,
    cli: str = "dagster",
) -> DagsterDeployment:
    """A started ``DagsterDeployment`` on the project's workspace (``cli="offload"``: ``offload dev``)."""
    deployment = DagsterDeployment(root, instance=instance, env=env, workspace=workspace, cli=cli)
    deployment.start(deadline)
    return deployment


# --- the crash tests' code location (tests/crash_location.py) ---------------------------------------------


def crash_deployment(root: Path, fast: bool = True) -> DagsterDeployment:
    """``offload dev`` on the crash tests' code location, ready once the daemons crash-resume relies on
    report healthy; ``fast=False`` keeps the product's intervals (deploy/instance-common.yaml)."""
    return DagsterDeployment(
        root, workspace=CRASH_WORKSPACE, cli="offload", fast=fast, daemons=CRASH_RESUME_DAEMONS, own_tmp=True
    )


def submit(
    dev: DagsterDeployment,
    scratch: Path,
    job: str,
    ops: dict[str, Any],
    execution: dict[str, Any] | None = None,
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


def run_workers(pid: int) -> list[psutil.Process]:
    """The forked run workers under process ``pid`` (a deployment's): fork-server children, but not a fork
    server's standby, which waits for the next run with no run of its own (offload/runtime/forkserver.py)."""
    workers = []
    for process in psutil.Process(pid).children(recursive=True):
        try:
            parent = process.parent()
            is_forked = parent is not None and "offload.runtime.forkserver" in " ".join(parent.cmdline())
            if is_forked and process.name() != forkserver.STANDBY_NAME:
                workers.append(process)
        except psutil.Error:
            continue
    return workers
