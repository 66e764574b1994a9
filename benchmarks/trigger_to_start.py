"""Trigger -> first step started, for ``hello_world``: offload's client against stock Dagster.

Two deployments run side by side on this machine, each ``dagster dev`` with this project's code location:

- **stock**: an instance config with nothing but telemetry off, so Dagster's defaults (QueuedRunCoordinator
  dequeuing every 5 s, DefaultRunLauncher starting a fresh run worker process), triggered with Dagster's own
  ``DagsterGraphQLClient.submit_job_execution``;
- **offload**: offload's embedded instance (``offload.runtime.instance.embedded_config()``), triggered with
  ``offload.client.Client.trigger``.

Rounds alternate between the two, one run at a time, so both see the same machine load; before each trigger
the benchmark waits (at most 10 s) until the machine is quiet (all cores together under 20% busy over two
0.2 s samples), so a run is not measured beside the other side's previous worker still exiting or its
daemon's post-run work: both sides are measured as an idle deployment receiving a trigger. Latency = the
first ``STEP_START`` event's timestamp (written by the run worker) minus the wall clock just before the
trigger call, both on this machine's clock. Prints median, min and max per side, offload / stock, and the
median of each phase: the trigger call (how long the client waited), from the trigger to the run's
``RUN_STARTING`` (the queue: stock waits for the daemon; offload's coordinator starts a run that would not
wait during the trigger call itself), the run worker's start (to its ``RUN_START``), and from there to the
first step.

The reference line is the same trivial task through bare Celery in the same rounds (Redis broker on this
machine, one prefork worker: benchmarks/support/celery_reference.py), send -> the task begins. Celery stores
no run, shows none in a UI and resumes none after a crash: it is the floor, not a peer of equal guarantees.

    .venv/bin/python -m benchmarks.trigger_to_start [--rounds 10] [--no-celery]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psutil
from dagster_graphql import DagsterGraphQLClient

from benchmarks.support import celery_reference, dagster_deployment
from benchmarks.support.waiting import wait_for
from offload.client import Client
from offload.paths import PROJECT_ROOT

STOCK_INSTANCE = "telemetry:\n  enabled: false\n"
MILESTONES = {  # event type -> what its timestamp marks
    "RunStartingEvent": "launched",  # the run left the queue (or skipped it) and its worker was asked for
    "RunStartEvent": "worker_started",  # the run worker process is up and has loaded the code
    "ExecutionStepStartEvent": "first_step",
}
PHASES = ("trigger_call", "to_launch", "worker_start", "to_step")
EVENTS_QUERY = """
query($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection { events { __typename ... on MessageEvent { timestamp } } }
  }
  runOrError(runId: $runId) { ... on Run { status } }
}"""


def milestones(url: str, run_id: str, deadline: float = 120.0) -> dict[str, float]:
    """Wait for the run to finish; return when it was launched, its worker started and its first step
    started (seconds since the epoch)."""
    query = {"query": EVENTS_QUERY, "variables": {"runId": run_id}}

    def ended() -> dict[str, Any] | None:
        data: dict[str, Any] = httpx.post(f"{url}/graphql", json=query, timeout=30).json()["data"]
        return data if data["runOrError"]["status"] in ("SUCCESS", "FAILURE", "CANCELED") else None

    data = wait_for(ended, deadline, f"run {run_id} to finish", interval=0.25)
    found: dict[str, float] = {}
    for event in data["logsForRun"]["events"]:
        name = MILESTONES.get(event["__typename"])
        if name and name not in found:
            found[name] = float(event["timestamp"]) / 1000
    if len(found) < len(MILESTONES):
        raise RuntimeError(f"run {run_id} ended {data['runOrError']['status']} without {MILESTONES}")
    return found


def settle(limit: float = 10.0) -> None:
    """Wait until all cores together were under 20% busy over two 0.2 s samples running (at most
    ``limit`` seconds)."""
    calm, give_up = 0, time.monotonic() + limit
    while calm < 2 and time.monotonic() < give_up:
        calm = calm + 1 if psutil.cpu_percent(interval=0.2) < 20 else 0


def measure(url: str, trigger: Callable[[str], str], name: str) -> dict[str, float]:
    """Seconds from just before the trigger call to the first step, and the phases on the way."""
    settle()
    before = time.time()
    run_id = trigger(name)
    returned = time.time()
    at = milestones(url, run_id)
    return {
        "to_first_step": at["first_step"] - before,
        "trigger_call": returned - before,
        "to_launch": at["launched"] - before,
        "worker_start": at["worker_started"] - at["launched"],
        "to_step": at["first_step"] - at["worker_started"],
    }


def summary(samples: list[dict[str, float]], key: str) -> dict[str, float]:
    values = [sample[key] for sample in samples]
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--no-celery", dest="celery", action="store_false", help="no Celery reference line")
    args = parser.parse_args(argv)
    results: dict[str, list[dict[str, float]]] = {"stock": [], "offload": []}
    celery: list[float] = []
    with tempfile.TemporaryDirectory(prefix="offload-bench-") as scratch, ExitStack() as stack:
        queue = stack.enter_context(celery_reference.worker()) if args.celery else None
        root = Path(scratch)
        stock = dagster_deployment.start(root / "stock", instance=STOCK_INSTANCE)
        offload = dagster_deployment.start(root / "offload")
        try:
            port = int(stock.url.rsplit(":", 1)[1])
            dagster_client = DagsterGraphQLClient("127.0.0.1", port_number=port)
            client = Client(offload.url)

            def stock_trigger(name: str) -> str:
                return dagster_client.submit_job_execution("hello_world", run_config={"name": name})

            def offload_trigger(name: str) -> str:
                return client.trigger("hello_world", {"name": name}).id

            # One unmeasured run each: a deployment's first run pays one-off costs (warm-up).
            measure(stock.url, stock_trigger, "warm-up")
            measure(offload.url, offload_trigger, "warm-up")
            for n in range(args.rounds):
                results["stock"].append(measure(stock.url, stock_trigger, f"round {n}"))
                results["offload"].append(measure(offload.url, offload_trigger, f"round {n}"))
                if queue is not None:
                    settle()
                    celery.append(celery_reference.send_to_start(queue, f"round {n}"))
                print(f"round {n + 1}/{args.rounds}: stock {results['stock'][-1]['to_first_step']:.2f} s, "
                      f"offload {results['offload'][-1]['to_first_step']:.2f} s", flush=True)  # fmt: skip
        finally:
            stock.stop()
            offload.stop()
    report = {side: {key: summary(samples, key) for key in samples[0]} for side, samples in results.items()}
    ratio = report["offload"]["to_first_step"]["median"] / report["stock"]["to_first_step"]["median"]
    print(f"\ntrigger -> first step started, hello_world, {args.rounds} rounds (seconds)")
    print(f"{'':9}{'median':>8}{'min':>8}{'max':>8}  | medians: " + "  ".join(PHASES))
    for side in ("stock", "offload"):
        first = report[side]["to_first_step"]
        phases = "".join(f"{report[side][phase]['median']:{len(phase) + 2}.2f}" for phase in PHASES)
        print(f"{side:9}{first['median']:8.2f}{first['min']:8.2f}{first['max']:8.2f}  |{' ' * 7}{phases}")
    if celery:
        line = summary([{"s": value} for value in celery], "s")
        figures = f"{line['median']:8.3f}{line['min']:8.3f}{line['max']:8.3f}"
        print(f"{'celery':9}{figures}  | the reference: send -> the task began")
    print(f"offload / stock (median): {ratio:.2f}x")
    out = PROJECT_ROOT / "benchmarks" / "results" / "trigger_to_start.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"rounds": args.rounds, "report": report, "ratio": ratio, "samples": results, "celery": celery},
            indent=2,
        )
    )
    print(f"samples: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
