"""Retry delay accuracy: how long offload really waits between attempts, against the formula.

Three series, each repeated, randomness off so every delay has one expected value:

- ``offload step``: an op under ``@retrying`` (factor 2, 0.25 s, capped at 2 s, 6 attempts) run in process
  by Dagster; measured from the moment an attempt raises to the start of the next one.
- ``dagster step`` (the baseline, side by side): the same op under Dagster's own ``dg.RetryPolicy``
  (constant 0.5 s: Dagster has no factor or cap), measured the same way, so the ratio shows what
  Dagster's scheduling costs by itself and what offload adds to it.
- ``offload fetch``: ``offload.net.http.fetch`` against a loopback server answering 503 four times, then a
  429 with ``Retry-After: 1``; measured between the requests' arrivals at the server.

Run: ``.venv/bin/python -m benchmarks.retry_delays [--repeat N]``. Prints one row per delay (median over
the repeats) and each series' worst ratio measured/formula.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import dagster as dg
import httpx

from benchmarks.support.http_server import LocalHTTPServer, body, sequence
from offload.net.address_policy import guarded_client
from offload.net.http import FetchRetry, fetch
from offload.retry import RetryPolicy, retrying

OFFLOAD_POLICY = RetryPolicy(max_attempts=6, factor=2, min_delay=0.25, max_delay=2.0, randomize=False)
DAGSTER_DELAY = 0.5
DAGSTER_RETRIES = 4


class Clock:
    """Failure and start times of the attempts of one run."""

    def __init__(self, failures_before_success: int):
        self.left = failures_before_success
        self.starts: list[float] = []
        self.failures: list[float] = []

    def attempt(self) -> None:
        self.starts.append(time.monotonic())
        if self.left > 0:
            self.left -= 1
            self.failures.append(time.monotonic())
            raise ConnectionResetError("benchmark: forced failure")

    def waits(self) -> list[float]:
        return [start - failed for failed, start in zip(self.failures, self.starts[1:], strict=True)]


CLOCK = Clock(0)


@dg.op
@retrying(OFFLOAD_POLICY)
def offload_step() -> None:
    CLOCK.attempt()


@dg.op(retry_policy=dg.RetryPolicy(max_retries=DAGSTER_RETRIES, delay=DAGSTER_DELAY))
def dagster_step() -> None:
    CLOCK.attempt()


def _step_waits(op: dg.OpDefinition, failures: int) -> list[float]:
    global CLOCK
    CLOCK = Clock(failures)
    job = dg.GraphDefinition(name=f"{op.name}_job", node_defs=[op]).to_job()
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}  # the table is the output
    result = job.execute_in_process(run_config=quiet, instance=dg.DagsterInstance.ephemeral())
    assert result.success
    return CLOCK.waits()


def offload_step_series() -> list[float]:
    return _step_waits(offload_step, OFFLOAD_POLICY.max_attempts - 1)


def dagster_step_series() -> list[float]:
    return _step_waits(dagster_step, DAGSTER_RETRIES)


FETCH_RETRY = FetchRetry(policy=RetryPolicy(max_attempts=6, min_delay=0.25, max_delay=2.0, randomize=False))


def fetch_series() -> list[float]:
    failing = [body(b"", 503)] * 4 + [body(b"", 429, {"Retry-After": "1"})]
    with LocalHTTPServer({"/flaky": sequence(*failing, body(b"ok"))}) as server:
        with guarded_client(timeout=httpx.Timeout(5.0), allow_hosts=[server.origin]) as client:
            fetch(client, server.url("/flaky"), retry=FETCH_RETRY)
        return [later - earlier for earlier, later in zip(server.times, server.times[1:], strict=False)]


SERIES: list[tuple[str, Callable[[], list[float]], list[float]]] = [
    ("offload step", offload_step_series, [OFFLOAD_POLICY.delay(n) for n in range(1, 6)]),
    ("dagster step", dagster_step_series, [DAGSTER_DELAY] * DAGSTER_RETRIES),
    ("offload fetch", fetch_series, [FETCH_RETRY.policy.delay(n) for n in range(1, 5)] + [1.0]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per series (median reported)")
    args = parser.parse_args()
    print(f"{'series':<14} {'retry':>5} {'formula s':>10} {'measured s':>11} {'extra ms':>9} {'ratio':>7}")
    worst: dict[str, float] = {}
    for name, measure, formula in SERIES:
        runs = [measure() for _ in range(args.repeat)]
        for index, expected in enumerate(formula):
            measured = statistics.median(run[index] for run in runs)
            ratio = measured / expected
            worst[name] = max(worst.get(name, 0.0), max(run[index] / expected for run in runs))
            extra = (measured - expected) * 1000
            row = f"{name:<14} {index + 1:>5} {expected:>10.3f} {measured:>11.3f} {extra:>9.1f} {ratio:>7.3f}"
            print(row)
    print()
    for name, ratio in worst.items():
        print(f"{name:<14} worst ratio over {args.repeat} runs: {ratio:.3f}")


if __name__ == "__main__":
    main()
