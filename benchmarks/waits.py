"""Durable waits against a sleeping step, side by side in one deployment: memory and processes per waiting
run, the time to put N runs into the waiting state, and the resume lag.

Starts ``dagster dev`` (SQLite, offload's instance config with 50 slots per nesting level) on the test-only
code location tests/wait_workspace.yaml, then:

* **offload**: ``--runs`` runs of ``nap`` (one step: ``offload.wait.until``). Time from the first trigger
  to every run WAITING; memory (RSS and USS summed over the ``dagster dev`` process tree) and process count
  then, against the same tree before the trigger. Then every due time is brought forward to ten a second
  from now (a direct update of the waits table: the machine's speed at starting runs does not decide
  when they are due) and the resume lag (due -> run handed back to the run queue) is read per wait.
* **baseline**: ``--stock`` runs of ``sleepy`` (the same step with ``time.sleep``), as a Dagster step
  waits: a worker process each, holding its slot. Memory and processes per sleeping run, measured on
  their worker processes (forked from offload's fork server, so pages shared with it count in RSS only; a
  worker started Dagster's way, a new process, has no such sharing).

``python -m benchmarks.waits [--runs 1000] [--stock 20] [--seconds 60]``. Prints one summary line.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import psutil
import sqlalchemy as sa

from benchmarks.support import dagster_deployment
from benchmarks.support.dagster_deployment import run_workers
from benchmarks.support.waiting import wait_for
from offload.client import Client
from offload.runtime import waitstore

WORKSPACE = Path(__file__).resolve().parents[1] / "tests" / "wait_workspace.yaml"
MIB = 1024 * 1024


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def memory(processes: list[psutil.Process]) -> tuple[float, float]:
    """Summed RSS and USS (MiB) of ``processes`` that are still alive."""
    rss = uss = 0.0
    for process in processes:
        try:
            info = process.memory_full_info()
        except psutil.Error:
            continue
        rss, uss = rss + info.rss / MIB, uss + info.uss / MIB
    return rss, uss


def trigger(client: Client, job: str, payload: dict, count: int) -> list[str]:
    ids: list[str] = []
    for start in range(0, count, 50):
        ids += [handle.id for handle in client.batch_trigger(job, [payload] * min(50, count - start)).runs]
    return ids


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.waits", description=__doc__)
    parser.add_argument("--runs", type=int, default=1000, help="offload runs waiting at once")
    parser.add_argument("--stock", type=int, default=20, help="runs sleeping in a step (the baseline)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the baseline's runs sleep")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-waits-") as scratch:
        root = Path(scratch)
        instance = dagster_deployment.instance_yaml(level_slots=50)
        # batch_trigger writes to this keys database; offload dev's batch creator reads it.
        keys = f"sqlite:///{root / 'keys.sqlite3'}"
        services = dagster_deployment.start(
            root, instance=instance, workspace=WORKSPACE, deadline=300, cli="offload",
            env={"OFFLOAD_IDEMPOTENCY_DB": keys},
        )  # fmt: skip
        client = Client(services.url, timeout=300, idempotency_db=keys)
        store = waitstore.WaitStore(f"sqlite:///{services.home / 'history' / 'offload_waits.db'}")
        table = waitstore.waits_table
        try:
            warm = trigger(client, "nap", {"until": time.time() + 8}, 1)  # fork server up, code imported
            client.wait(warm[0], timeout=300)
            rss0, uss0 = memory(tree(services.pid))
            procs0 = len(tree(services.pid))

            later = time.time() + 86400
            started = time.time()
            trigger(client, "nap", {"until": later}, args.runs)

            def waiting() -> list[waitstore.WaitRow]:
                rows = [row for row in store.waits_in(waitstore.WAITING) if row.due_at == later]
                return rows if len(rows) == args.runs else []

            rows = wait_for(waiting, 3600, "every run to wait", interval=1.0)
            to_wait = time.time() - started
            wait_for(lambda: not run_workers(services.pid), 60, "the last workers to exit")
            rss1, uss1 = memory(tree(services.pid))
            procs1 = len(tree(services.pid))

            first = time.time() + 3
            with store.engine.begin() as connection:
                for index, row in enumerate(rows):
                    connection.execute(
                        table.update().where(table.c.id == row.id).values(due_at=first + index / 10)
                    )
            ids = [row.id for row in rows]

            def resumed() -> list[float]:
                with store.engine.connect() as connection:
                    found = connection.execute(
                        sa.select(table.c.due_at, table.c.resumed_at).where(
                            table.c.id.in_(ids), table.c.state == waitstore.RESUMED
                        )
                    ).all()
                if len(found) < len(ids):
                    return []
                # A wait whose run was no longer NOT_STARTED when it came due is closed without a hand-back
                # (no resumed_at): counted apart, never as a lag.
                return [r.resumed_at - r.due_at if r.resumed_at is not None else math.nan for r in found]

            every = wait_for(resumed, 3600, "every wait to resume", interval=1.0)
            lags = sorted(lag for lag in every if not math.isnan(lag))
            unhanded = len(every) - len(lags)
            wait_for(
                lambda: store.counts().get(waitstore.WAITING, 0) == 0, 600, "no waits left", interval=1.0
            )
            wait_for(
                lambda: not run_workers(services.pid),
                1800,
                "resumed runs to finish",
                interval=1.0,
            )

            trigger(client, "sleepy", {"seconds": args.seconds}, args.stock)
            sleeping = wait_for(
                lambda: (found := run_workers(services.pid)) and len(found) >= args.stock and found,
                600,
                "every baseline run to sleep",
            )
            stock_rss, stock_uss = memory(sleeping)
        finally:
            client.close()
            services.stop()
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    print(
        f"offload: {args.runs} runs waiting: +{rss1 - rss0:.0f} MiB RSS / +{uss1 - uss0:.0f} MiB USS for the"
        f" whole tree, {procs1 - procs0:+d} processes, {to_wait:.0f} s to put them all in WAITING;"
        f" resume lag p50 {statistics.median(lags):.2f} s, p99 {p99:.2f} s, max {lags[-1]:.2f} s"
        f" ({unhanded} closed without a hand-back) |"
        f" baseline: {args.stock} runs sleeping in a step: {len(sleeping)} worker processes,"
        f" {stock_rss / len(sleeping):.0f} MiB RSS / {stock_uss / len(sleeping):.0f} MiB USS per run"
    )


if __name__ == "__main__":
    main()
