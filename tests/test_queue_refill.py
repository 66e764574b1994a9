"""offload/runtime/queue_refill.py: between the daemon's looks, a freed slot starts the next queued run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter

from offload.runtime import queue_refill


class Counts:
    """An instance whose run counts follow a script: each poll reads the next (queued, in progress)."""

    def __init__(self, script: list[tuple[int, int]]):
        self.script = script
        self.polls = 0
        self.iterations: list[int] = []  # the script entry after which the daemon's iteration ran again

    def get_runs_count(self, filters: RunsFilter) -> int:
        queued, in_progress = self.script[min(self.polls, len(self.script) - 1)]
        if filters.statuses == [DagsterRunStatus.QUEUED]:
            self.polls += 1  # refill reads "queued" once per round, first
            return queued
        return in_progress

    def iteration(self) -> Iterator[Any]:
        self.iterations.append(self.polls)
        yield None


def drain(counts: Counts, began: float) -> None:
    for _ in queue_refill.refill(counts, counts.iteration, began):  # type: ignore[arg-type]
        pass


def test_nothing_queued_returns_at_once_without_an_iteration():
    counts = Counts([(0, 10)])
    drain(counts, time.monotonic())
    assert counts.iterations == []
    assert counts.polls == 1


def test_the_iteration_runs_again_only_when_a_run_in_progress_has_ended():
    # queued stays 5 while the runs in progress go 10, 10, 9 (one ended: entry 2), 9, 10, 8 (entry 5),
    # then the queue empties.
    counts = Counts([(5, 10), (5, 10), (5, 9), (5, 9), (5, 10), (5, 8), (0, 8)])
    drain(counts, time.monotonic())
    assert counts.iterations == [2, 5]


def test_refilling_stops_at_the_end_of_the_window_even_with_runs_queued():
    counts = Counts([(5, 10)])
    started = time.monotonic()
    drain(counts, started)
    assert queue_refill.WINDOW_SECONDS <= time.monotonic() - started < queue_refill.WINDOW_SECONDS + 0.5
    assert counts.iterations == []
