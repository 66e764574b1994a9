"""Run throughput: N trivial ``hello_world`` runs submitted through the client, offload against stock Dagster.

Two deployments, one after the other in the same invocation, each ``dagster dev`` / ``offload dev`` with
this project's code location and a data directory of its own:

- **stock**: Dagster's defaults (DefaultRunLauncher: a new run worker process per run) with its
  QueuedRunCoordinator dequeuing every second (``dequeue_interval_seconds: 1``);
- **offload**: offload's embedded instance (``offload.runtime.instance.embedded_config()``), its webserver
  running the batch creator.

For each, ``--runs`` runs are submitted by one thread, in one of two modes: one by one
(``Client.trigger``), or as a batch (offload: ``Client.batch_trigger(wait=False)``, whose runs the
creator makes; stock has no batch creator, so its batch is Dagster's GraphQL ``launchMultipleRuns``
in requests of 50). Measured: the time to create (the submit calls, and for an offload batch until every
run exists), the time to drain (first submit -> every run finished), completed runs/s, the CPU seconds
of the deployment's process group per run, and its peak resident memory. The process group is sampled
every 0.1 s (psutil): a process's CPU after its last sample is not counted, so CPU per run is a lower
bound (a forked run worker lives ~0.5 s; its last ~0.05 s are missed on average).

    .venv/bin/python -m benchmarks.run_throughput [--runs 30] [--modes one,batch] [--skip-stock]

``--accept N`` measures only how long ``batch_trigger(wait=False)`` takes to accept N items (three calls),
with no server: the job is put in the client's cache and the batch goes to a scratch SQLite database.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from benchmarks.support import dagster_deployment
from offload.client import Client

STOCK_INSTANCE = yaml.safe_dump(
    {
        "telemetry": {"enabled": False},
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {"dequeue_interval_seconds": 1},
        },
    }
)
LAUNCH_MANY = """
mutation Many($params: [ExecutionParams!]!) {
  launchMultipleRuns(executionParamsList: $params) { __typename }
}"""
COUNT = """
query Count($filter: RunsFilter!) {
  runsOrError(filter: $filter, limit: 5000) { ... on Runs { results { status } } }
}
"""
FINAL = {"SUCCESS", "FAILURE", "CANCELED"}
DRAIN_LIMIT = 900.0  # seconds: a deployment that has not drained by then is reported as such


class GroupSampler:
    """CPU seconds and resident memory of one process group, sampled in a thread."""

    def __init__(self, pgid: int):
        self.pgid = pgid
        self.cpu: dict[tuple[int, float], float] = {}
        self.roles: dict[tuple[int, float], str] = {}
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.1)

    def _sample(self) -> None:
        rss = 0
        for process in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(process.pid) != self.pgid:
                    continue
                key = (process.pid, process.create_time())
                if key not in self.roles:
                    self.roles[key] = role(process)
                times = process.cpu_times()
                self.cpu[key] = times.user + times.system
                rss += process.memory_info().rss
            except (psutil.Error, ProcessLookupError):
                continue
        self.peak_rss = max(self.peak_rss, rss)

    def total(self) -> float:
        return sum(self.cpu.values())

    def by_role(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for key, seconds in self.cpu.items():
            totals[self.roles[key]] = totals.get(self.roles[key], 0.0) + seconds
        return totals

    def __enter__(self) -> GroupSampler:
        self._sample()  # the baseline: what the deployment had spent before the measurement
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()


ROLES = (  # a command-line marker, the role it shows (the first that matches)
    ("offload.runtime.dev_server", "webserver"), ("dagster_webserver", "webserver"),
    ("dagster-webserver", "webserver"), ("_daemon", "daemon"), ("dagster-daemon", "daemon"),
    ("api grpc", "code server"), ("code-server", "code server"), ("execute_run", "run worker"),
    ("multiprocessing.spawn", "run worker"), ("tail -F", "log tailer"), ("offload.webhooks", "gateway"),
    (" dev", "dev command"),
)  # fmt: skip


def role(process: psutil.Process) -> str:
    """What a process of the deployment is, from its command line (a forked run worker carries its fork
    server's)."""
    command = " ".join(process.cmdline())
    if "offload.runtime.forkserver" in command:
        parent_process = process.parent()
        parent = " ".join(parent_process.cmdline()) if parent_process is not None else ""
        return "run worker" if "offload.runtime.forkserver" in parent else "fork server"
    for marker, name in ROLES:
        if marker in command:
            return name
    return "other: " + command[:60]


def statuses(url: str, marker: str) -> list[str]:
    reply = httpx.post(
        f"{url}/graphql",
        json={"query": COUNT, "variables": {"filter": {"tags": [{"key": "bench", "value": marker}]}}},
        timeout=60,
    )
    return [run["status"] for run in reply.json()["data"]["runsOrError"]["results"]]


def measure(url: str, keys: str, side: str, mode: str, runs: int, pgid: int) -> dict[str, float]:
    marker = uuid.uuid4().hex[:10]
    payloads = [{"name": f"R{index}"} for index in range(runs)]
    client = Client(url, timeout=600, idempotency_db=keys)  # the batch creator's database
    # One unmeasured run first: what a deployment does once (offload's fork servers start their preload at
    # the first trigger, the webserver loads the job's plan) is not a cost per run.
    client.wait(client.trigger("hello_world", {"name": "warm-up"}).id, timeout=300, poll_interval=0.2)
    with GroupSampler(pgid) as sampler:
        cpu_before, roles_before = sampler.total(), sampler.by_role()
        start = time.monotonic()
        if mode == "one":
            for payload in payloads:
                client.trigger("hello_world", payload, tags={"bench": marker})
        elif side == "offload":
            result = client.batch_trigger("hello_world", payloads, wait=False, tags={"bench": marker})
            accepted = time.monotonic() - start
            while client.batch(result.id).pending and time.monotonic() - start < DRAIN_LIMIT:
                time.sleep(0.1)
        else:
            info = client._job("hello_world")
            for first in range(0, runs, 50):
                params = [
                    {"selector": info.selector(), "runConfigData": payload,
                     "executionMetadata": {"tags": [{"key": "bench", "value": marker}]}}
                    for payload in payloads[first : first + 50]
                ]  # fmt: skip
                client._graphql(LAUNCH_MANY, {"params": params})
        created = time.monotonic() - start
        while True:
            found = statuses(url, marker)
            if len(found) == runs and all(status in FINAL for status in found):
                break
            if time.monotonic() - start > DRAIN_LIMIT:
                print(f"  {side} {mode}: not drained after {DRAIN_LIMIT:.0f} s", flush=True)
                break
            time.sleep(0.25)
        drained = time.monotonic() - start
        cpu = sampler.total() - cpu_before
        cpu_by_role = {name: t - roles_before.get(name, 0.0) for name, t in sampler.by_role().items()}
    client.close()
    done = sum(status == "SUCCESS" for status in statuses(url, marker))
    figures = {
        "create_s": created, "drain_s": drained, "runs_per_s": done / drained, "succeeded": done,
        "cpu_s_per_run": cpu / runs, "peak_rss_mb": sampler.peak_rss / 2**20,
    }  # fmt: skip
    if mode == "batch" and side == "offload":
        figures["accepted_s"] = accepted
    print(f"  {side:7} {mode:5}: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()), flush=True)
    print("           CPU s per run by process " + ", ".join(
        f"{name} {seconds / runs:.3f}" for name, seconds in sorted(cpu_by_role.items(), key=lambda x: -x[1])
    ), flush=True)  # fmt: skip
    return figures


def accept(items: int) -> None:
    from offload.client.api import _Job

    with tempfile.TemporaryDirectory(prefix="run-throughput-accept-") as tmp:
        client = Client("http://127.0.0.1:9", idempotency_db=f"sqlite:///{tmp}/keys.sqlite3")
        client._jobs = {"hello_world": _Job("hello_world", "location", "repository", {})}
        client._jobs_loaded = time.monotonic() + 1e9  # never listed again: no server here
        client._batch_store()
        for call in range(3):
            start = time.perf_counter()
            payloads = [{"name": f"R{index}"} for index in range(items)]
            result = client.batch_trigger(
                "hello_world", payloads, wait=False, batch_idempotency_key=f"k{call}"
            )
            print(f"{len(result.runs):,} items accepted in {time.perf_counter() - start:.2f} s")
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs per measurement (max 1,000)")
    parser.add_argument("--modes", default="one,batch", help="one, batch or both (comma-separated)")
    parser.add_argument("--skip-stock", action="store_true", help="offload only")
    parser.add_argument("--accept", type=int, metavar="N", help="only: batch_trigger accepting N items")
    args = parser.parse_args(argv)
    if args.accept:
        accept(min(args.accept, 1000))
        return 0
    runs, modes = min(args.runs, 1000), [mode.strip() for mode in args.modes.split(",")]
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    results: dict[tuple[str, str], dict[str, float]] = {}
    sides = ["offload"] if args.skip_stock else ["stock", "offload"]
    with tempfile.TemporaryDirectory(prefix="run-throughput-") as tmp:
        for side in sides:
            root = Path(tmp) / side
            keys = f"sqlite:///{root / 'keys.sqlite3'}"
            root.mkdir()
            deployment = dagster_deployment.start(
                root, deadline=300,
                instance=STOCK_INSTANCE if side == "stock" else dagster_deployment.instance_yaml(),
                cli="dagster" if side == "stock" else "offload", env={"OFFLOAD_IDEMPOTENCY_DB": keys},
            )  # fmt: skip
            try:
                for mode in modes:
                    group = deployment.pid
                    results[(side, mode)] = measure(deployment.url, keys, side, mode, runs, group)
            finally:
                deployment.stop()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not args.skip_stock:
        for mode in modes:
            stock, ours = results[("stock", mode)], results[("offload", mode)]
            print(
                f"{mode}: create {ours['create_s']:.1f} s vs {stock['create_s']:.1f} s; drain "
                f"{ours['runs_per_s']:.2f} vs {stock['runs_per_s']:.2f} runs/s "
                f"({ours['runs_per_s'] / stock['runs_per_s']:.1f}x); CPU per run "
                f"{ours['cpu_s_per_run']:.2f} vs {stock['cpu_s_per_run']:.2f} s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
