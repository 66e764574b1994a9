"""Crash detection-to-resume time, median of N trials, with the product's own settings (or ``--fast``).

Runs ``offload dev`` on a temporary DAGSTER_HOME with the test-only code location
(tests/crash_workspace.yaml). Each trial launches ``three_steps`` with ``second`` waiting on a gate, kills
the run worker the moment ``second`` starts, opens the gate, and reads the timestamps Dagster stored:

* worker kill (code server alive): kill -> run failed (detection), failed -> retry run started (resume);
* kill -9 of the whole tree, then restart: restart -> run failed (offload's launcher health check),
  failed -> retry started;
* worker kill while the run is STARTING (``held_start``: the worker holds in executor set-up, before
  RUN_START): kill -> run failed (offload/runtime/monitoring.py; Dagster alone waits for its 180 s start
  timeout), failed -> retry started;
* baseline, side by side: an uninterrupted run (submit -> success) against a crashed one (submit -> its
  retry's success): the ratio is what a crash costs.

Prints one summary line. ``python -m benchmarks.crash_resume [--trials 5] [--fast] [--cases ...]``;
``--fast`` uses the test suite's 1 s intervals instead of deploy/instance-common.yaml's; ``--cases``
picks some of ``worker tree starting`` (default all, with the baseline).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

import dagster as dg

from benchmarks.support.dagster_deployment import (
    DagsterDeployment,
    crash_deployment,
    finished,
    step_log,
    submit,
)
from benchmarks.support.waiting import wait_for
from offload.runtime.launcher import run_worker

CASES = ("worker", "tree", "starting")


class Times:
    """A finished run's stored timestamps (epoch seconds)."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str) -> None:
        record = instance.get_run_record_by_id(run_id)
        assert record is not None and record.start_time is not None and record.end_time is not None
        self.created = record.create_timestamp.timestamp()
        self.started: float = record.start_time
        self.ended: float = record.end_time


def _tags(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    run = instance.get_run_by_id(run_id)
    return dict(run.tags) if run else {}


def _retry_of(instance: dg.DagsterInstance, run_id: str) -> str:
    run = wait_for(lambda: finished(instance, run_id), 300, "the dead run to be failed")
    assert run.status == dg.DagsterRunStatus.FAILURE, run.status
    retry_id = wait_for(lambda: _tags(instance, run_id).get("dagster/auto_retry_run_id"), 120, "the retry")
    retry = wait_for(lambda: finished(instance, retry_id), 300, "the retry to finish")
    assert retry.status == dg.DagsterRunStatus.SUCCESS, retry.status
    return retry_id


def _blocked_run(dev: DagsterDeployment, instance: dg.DagsterInstance, scratch: Path) -> tuple[str, int]:
    run_id = submit(dev, scratch, "three_steps", {"second": {"config": {"block": True}}})
    wait_for(lambda: step_log(scratch)[-1:] == ["second"], 120, "step second to start", interval=0.02)
    worker = run_worker(instance, run_id)
    assert worker is not None
    return run_id, worker.pid


def _starting_run(dev: DagsterDeployment, instance: dg.DagsterInstance, scratch: Path) -> tuple[str, int]:
    run_id = submit(dev, scratch, "held_start", {}, execution={"scratch": str(scratch)})
    wait_for(
        lambda: step_log(scratch) == ["held start"], 120, "the worker to hold while starting", interval=0.02
    )
    worker = run_worker(instance, run_id)
    assert worker is not None
    run = instance.get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.STARTING, run
    return run_id, worker.pid


def _plain_run(dev: DagsterDeployment, instance: dg.DagsterInstance, scratch: Path) -> str:
    run_id = submit(dev, scratch, "three_steps", {})
    run = wait_for(lambda: finished(instance, run_id), 300, "the baseline run")
    assert run.status == dg.DagsterRunStatus.SUCCESS, run.status
    return run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--fast", action="store_true", help="1 s intervals, as in the tests")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="crash-bench-") as tmp:
        root = Path(tmp)
        dev = crash_deployment(root, fast=args.fast)
        worker_detect: list[float] = []
        worker_resume: list[float] = []
        tree_detect: list[float] = []
        tree_boot: list[float] = []
        tree_resume: list[float] = []
        plain: list[float] = []
        crashed: list[float] = []
        starting_detect: list[float] = []
        starting_resume: list[float] = []
        try:
            dev.start()
            with dg.DagsterInstance.from_config(str(dev.home)) as instance:
                for trial in range(args.trials):
                    if "worker" in args.cases:
                        base = Times(instance, _plain_run(dev, instance, root / f"plain{trial}"))
                        plain.append(base.ended - base.created)

                        scratch = root / f"worker{trial}"
                        run_id, pid = _blocked_run(dev, instance, scratch)
                        os.kill(pid, signal.SIGKILL)
                        killed = time.time()
                        (scratch / "gate").touch()
                        retry_id = _retry_of(instance, run_id)
                        failed, retry = Times(instance, run_id), Times(instance, retry_id)
                        worker_detect.append(failed.ended - killed)
                        worker_resume.append(retry.started - failed.ended)
                        crashed.append(retry.ended - failed.created)

                    if "starting" in args.cases:
                        scratch = root / f"starting{trial}"
                        run_id, pid = _starting_run(dev, instance, scratch)
                        os.kill(pid, signal.SIGKILL)
                        killed = time.time()
                        (scratch / "start-gate").touch()
                        retry_id = _retry_of(instance, run_id)
                        record = instance.get_run_record_by_id(run_id)
                        assert record is not None and record.end_time is not None
                        starting_detect.append(record.end_time - killed)
                        starting_resume.append(Times(instance, retry_id).started - record.end_time)

                    if "tree" in args.cases:
                        scratch = root / f"tree{trial}"
                        run_id, _ = _blocked_run(dev, instance, scratch)
                        dev.kill_everything()
                        (scratch / "gate").touch()
                        restarted = dev.start()
                        retry_id = _retry_of(instance, run_id)
                        failed, retry = Times(instance, run_id), Times(instance, retry_id)
                        tree_detect.append(failed.ended - restarted)
                        tree_boot.append(dev.ready_at - restarted)
                        tree_resume.append(retry.started - failed.ended)
        finally:
            dev.stop()

    med = statistics.median
    settings = (
        "test intervals (1 s)"
        if args.fast
        else "product settings (monitor poll 10 s, Dagster's queue and retry daemons)"
    )
    parts = []
    if worker_detect:
        parts.append(
            f"worker kill -9 -> run failed {med(worker_detect):.1f} s, "
            f"failed -> retry started {med(worker_resume):.1f} s"
        )
    if starting_detect:
        parts.append(
            f"worker kill -9 while STARTING -> run failed {med(starting_detect):.1f} s "
            f"(max {max(starting_detect):.1f} s; Dagster alone: its 180 s start timeout), "
            f"failed -> retry started {med(starting_resume):.1f} s"
        )
    if tree_detect:
        parts.append(
            f"kill -9 of everything + restart -> run failed {med(tree_detect):.1f} s after restart "
            f"(offload dev ready after {med(tree_boot):.1f} s), "
            f"failed -> retry started {med(tree_resume):.1f} s"
        )
    if plain:
        parts.append(
            f"3-step run submit -> success: uninterrupted {med(plain):.1f} s, killed mid-step and resumed "
            f"{med(crashed):.1f} s ({med(crashed) / med(plain):.1f}x)"
        )
    print(f"crash_resume, median of {args.trials}, {settings}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
