"""A real Dagster deployment for tests and benchmarks: ``dagster dev`` (webserver, daemon and code server)
on a free loopback port, with its own DAGSTER_HOME.

The instance config starts from offload's embedded one (``offload.runtime.instance.embedded_config()``, the
one source
of truth) and may swap storage (Postgres) or shrink the per-level slots. The services run in their own
process group (``start_new_session``: Dagster maps SIGTERM to SIGINT, which background processes started
without job control ignore) and are stopped by that group's id. Ready means: the code location's jobs are
listed and the run queue daemon has sent a heartbeat.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg2
import yaml

from benchmarks.support.waiting import free_port
from offload import paths
from offload.runtime import instance

BIN = Path(sys.executable).parent
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
READY_QUERY = """{
  repositoriesOrError { ... on RepositoryConnection { nodes { pipelines { name } } } }
  instance { daemonHealth { allDaemonStatuses { daemonType healthy } } }
}"""


def instance_yaml(storage: Mapping[str, Any] | None = None, level_slots: int | None = None) -> str:
    """offload's embedded instance config, with ``storage`` (e.g. Postgres) and ``level_slots`` swapped in."""
    config = instance.embedded_config()
    if storage is not None:
        config["storage"] = dict(storage)
    if level_slots is not None:
        for rule in config["run_coordinator"]["config"]["tag_concurrency_limits"]:
            if rule["key"] == "offload/depth":
                rule["limit"] = level_slots
    return yaml.safe_dump(config, sort_keys=False)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A uniquely named, empty database on the local server; dropped afterwards. Yields its psycopg2 URL."""
    name = f"offload_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(dbname="postgres", **PG)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def postgres_storage(url: str) -> dict[str, Any]:
    return {"postgres": {"postgres_url": url}}


def production_env(url: str, root: Path) -> dict[str, str]:
    """What deploy/dagster.yaml reads from the environment, for the database at ``url`` (a
    :func:`postgres_database` URL) and compute logs under ``root``. The local server trusts loopback, so
    the password is never checked; it is set because production sets it."""
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


def rows(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Rows of one query against the database at ``url``: what Dagster stored, read behind its back."""
    dsn = url.replace("postgresql+psycopg2", "postgresql")
    with contextlib.closing(psycopg2.connect(dsn)) as db, db.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


@dataclass
class DagsterServices:
    url: str
    home: Path
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """Interrupt the whole process group, then kill what is left of it."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # code server and run workers of the group
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
) -> DagsterServices:
    """Start ``dagster dev`` for this project with DAGSTER_HOME and OFFLOAD_DATA_DIR under ``root``, on the
    project's workspace.yaml unless another ``workspace`` file is given; ``cli="offload"`` starts
    ``offload dev`` instead (the UI behind offload/runtime/ui_guard.py)."""
    home, data = root / "home", root / "data"
    home.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(instance if instance is not None else instance_yaml())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    service_env = {k: v for k, v in os.environ.items() if not k.startswith(("OFFLOAD_", "DAGSTER_"))}
    service_env |= {
        "DAGSTER_HOME": str(home),
        "OFFLOAD_DATA_DIR": str(data),
        "OFFLOAD_DAGSTER_URL": url,  # child runs reach the webserver through the client
        **(env or {}),
    }
    log = root / "dagster-dev.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / cli), "dev", "-w", str(workspace or "workspace.yaml"),
             "-h", "127.0.0.1", "-p", str(port)],
            cwd=paths.PROJECT_ROOT, env=service_env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    services = DagsterServices(url, home, data, service_env, process, log)
    try:
        _wait_ready(services, deadline)
    except BaseException:
        services.stop()
        raise
    return services


def _wait_ready(services: DagsterServices, deadline: float) -> None:
    give_up = time.monotonic() + deadline
    problem = "not started"
    while time.monotonic() < give_up:
        if services.process.poll() is not None:
            raise RuntimeError(f"dagster dev exited: {services.log.read_text()[-3000:]}")
        try:
            data = httpx.post(f"{services.url}/graphql", json={"query": READY_QUERY}, timeout=5).json()[
                "data"
            ]
            jobs = [job for repo in data["repositoriesOrError"].get("nodes", []) for job in repo["pipelines"]]
            daemons = {
                d["daemonType"]: d["healthy"] for d in data["instance"]["daemonHealth"]["allDaemonStatuses"]
            }
            if jobs and daemons.get("QUEUED_RUN_COORDINATOR"):
                return
            problem = f"jobs={len(jobs)} daemons={daemons}"
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as error:
            problem = repr(error)
        time.sleep(0.5)
    raise TimeoutError(
        f"dagster dev not ready after {deadline:.0f} s ({problem}): {services.log.read_text()[-3000:]}"
    )
