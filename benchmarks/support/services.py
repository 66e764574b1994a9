"""Single real services for tests and benchmarks: an instance directory, the daemon, the webhook gateway
and Celery workers, each started as its own process group (``start_new_session=True``: Dagster maps
SIGTERM to SIGINT, which background processes of a non-interactive shell ignore) and stopped by that
group's id, never by name. A whole deployment (webserver, daemon and code server together) is
``dagster_deployment.py``'s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from benchmarks.support import dagster_deployment, webhooks
from benchmarks.support.waiting import free_port, wait_for
from offload import paths


def write_instance(home: Path, run_queue: Mapping[str, Any] | None = None) -> Path:
    """The DAGSTER_HOME ``offload`` makes (``dagster_deployment.instance_yaml()``: its run coordinator and
    launcher), with ``run_queue`` settings laid over the run coordinator's, and its storage created.

    Created here, once: a daemon and a gateway started together on a new home each create the SQLite
    schedule storage and stamp its schema version, and the loser finds two versions and fails to start
    (Dagster's own ``dagster dev``, and so ``offload dev``, opens the instance before its processes)."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    home.mkdir(parents=True, exist_ok=True)
    config = dagster_deployment.instance_yaml(run_coordinator={"config": dict(run_queue or {})})
    (home / "dagster.yaml").write_text(config)
    dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))).dispose()
    return home


class Service:
    """A process group started for a test; ``stop()`` ends it (SIGTERM, then SIGKILL after a deadline)."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], log: Path):
        self.name, self.args, self.env, self.log = name, args, dict(env), log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.args, cwd=paths.PROJECT_ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill_hard(self) -> None:
        """``kill -9`` of the service's own process (a crash); its children are left as a crash leaves them
        (the stop at the end takes the whole group)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM to the service's own process only, for a service that ends its children itself (Celery's
        warm shutdown stops its pool); waits up to ``timeout`` for it to exit and returns its exit code.
        ``stop()`` stays the cleanup for whatever it left."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def group_alive(self) -> bool:
        """Whether any process of the service's group still runs (its children included)."""
        assert self.process is not None
        return _group_alive(self.process.pid)

    def stop(self, timeout: float = 20) -> None:
        """End the whole process group: SIGTERM, then SIGKILL if it is still there after ``timeout``."""
        if self.process is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(self.process.pid):
                self.process.poll()
                time.sleep(0.1)
            if not _group_alive(self.process.pid):
                break
        self.process.poll()
        self.process = None

    def tail(self, lines: int = 40) -> str:
        return (
            "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""
        )


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # Zombies of the group still count for killpg(0): look for a live member.
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def daemon(env: Mapping[str, str], log: Path, definitions: Path | None = None) -> Service:
    """``dagster-daemon run`` on the project's workspace.yaml, or on the ``definitions`` file alone."""
    executable = str(Path(sys.executable).with_name("dagster-daemon"))
    target = ["-f", str(definitions)] if definitions else ["-w", str(paths.PROJECT_ROOT / "workspace.yaml")]
    return Service("dagster-daemon", [executable, "run", *target], env, log)


def celery_worker(env: Mapping[str, str], name: str, log: Path, concurrency: int = 2) -> Service:
    """A step worker as README runs it (``offload/runtime/celery_worker.py``), with ``definitions`` imported
    before
    the pool forks; no gossip or mingle, so it neither waits for nor talks to other workers on the broker."""
    executable = str(Path(sys.executable).with_name("celery"))
    args = [executable, "-A", "offload.runtime.celery_worker", "worker", "-I", "definitions", "-n", name,
            "--concurrency", str(concurrency), "--loglevel", "INFO",
            "--without-gossip", "--without-mingle"]  # fmt: skip
    return Service("celery worker", args, env, log)


def gateway(env: Mapping[str, str], port: int, log: Path) -> Service:
    """The gateway as deployed (``python -m offload.webhooks serve``). Load tests send everything from one
    address, so the per-source rate limit is off unless ``env`` sets one (test_webhook_abuse.py does)."""
    args = [sys.executable, "-m", "offload.webhooks", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return Service("gateway", args, {"OFFLOAD_WEBHOOK_RATE_LIMIT": "off", **env}, log)


def gateway_ready(port: int, launcher: str) -> bool:
    """The gateway answers /healthz with its launcher in state ``launcher`` (``ready`` or ``off``)."""
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200 and answer.json().get("launcher") == launcher


@contextmanager
def sensor_gateway(root: Path, **settings: str) -> Iterator[tuple[int, str]]:
    """A gateway that only stores deliveries (``OFFLOAD_WEBHOOK_LAUNCH=sensor``) in a SQLite inbox under
    ``root``, with the providers' test secrets and ``settings`` (more environment); yields its port and the
    inbox URL once /healthz answers, and stops it by its process group afterwards."""
    inbox_url = f"sqlite:///{root / 'inbox.db'}"
    env = {
        **webhooks.SECRETS_ENV,
        "PATH": "/usr/bin:/bin",
        "OFFLOAD_DATA_DIR": str(root / "data"),
        "DAGSTER_HOME": str(root / "home"),
        "OFFLOAD_WEBHOOK_INBOX_URL": inbox_url,
        "OFFLOAD_WEBHOOK_LAUNCH": "sensor",
        **settings,
    }
    port = free_port()
    service = gateway(env, port, root / "gateway.log").start()
    try:
        wait_for(
            lambda: gateway_ready(port, "off"), 60, "the gateway to answer /healthz", detail=service.tail
        )
        yield port, inbox_url
    finally:
        service.stop()
