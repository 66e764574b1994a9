"""The same trivial task through bare Celery on this machine: the reference line of
benchmarks/trigger_to_start.py (a Redis broker, one prefork worker, nothing stored but the result).

``started`` returns the wall clock when the worker began the task, so send -> start is measured on this
machine's clock like offload's trigger -> first step. The queue's name is unique per benchmark run: another
Celery worker on the same Redis never takes its tasks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from celery import Celery

from benchmarks.support.waiting import wait_for
from offload.paths import PROJECT_ROOT

BROKER = os.environ.get("OFFLOAD_BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/0")
app = Celery("offload_bench", broker=BROKER, backend=BROKER)
app.conf.update(worker_prefetch_multiplier=1, task_acks_late=False, worker_hijack_root_logger=False)


@app.task(name="offload_bench.started")
def started(name: str) -> float:
    """The trivial task: when it began (seconds since the epoch)."""
    return time.time()


@contextmanager
def worker(deadline: float = 60.0) -> Iterator[str]:
    """One prefork Celery worker (concurrency 1) on a queue of its own, its name yielded once it answers a
    task; stopped by its own pid (warm shutdown, then kill) on the way out."""
    queue = f"offload-bench-{uuid.uuid4().hex[:12]}"
    command = [sys.executable, "-m", "celery", "-A", "benchmarks.support.celery_reference", "worker",
               "--pool", "prefork", "--concurrency", "1", "--queues", queue, "--loglevel", "WARNING",
               "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, start_new_session=True)
    try:
        # The first task waits in the queue until the worker is up; its answer is the readiness signal.
        first = started.apply_async(("ready",), queue=queue)
        wait_for(lambda: first.ready(), deadline, "the Celery worker to answer its first task", interval=0.1)
        yield queue
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def send_to_start(queue: str, name: str, timeout: float = 30.0) -> float:
    """Seconds from just before sending ``started`` to the worker beginning it."""
    before = time.time()
    result = started.apply_async((name,), queue=queue)
    began: float = result.get(timeout=timeout)
    return began - before
