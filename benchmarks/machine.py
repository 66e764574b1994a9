"""Timing on a shared machine: wall and CPU seconds of a run, and how much CPU everything else took.

On a 2-core machine anything else running (an install, a test suite) slows an encode that already uses
both cores, so every run first waits (at most 2 min) for the machine to go quiet, and a run during which
other processes still took more than 10% of the cores is done again, at most 3 more times, keeping the
attempt they disturbed least. CPU seconds (this process and every descendant, orphans included) barely
depend on contention and back up the wall-time ratios.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import psutil

QUIET_BUSY_PERCENT = 15.0  # of all cores together
QUIET_SECONDS = 3
MAX_WAIT_SECONDS = 120
BUSY_SHARE = 0.10  # other processes' CPU over a run, as a share of all cores, that voids the run
RETRIES = 3
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
REAP_SECONDS = 10.0

T = TypeVar("T")


@dataclass
class Timing:
    wall: float = 0.0
    cpu: float = 0.0  # this process and its finished descendants (ffmpeg, the dagster CLI)
    other_cpu: float = 0.0  # every other process on the machine meanwhile
    steal: float = 0.0  # CPU seconds the hypervisor gave to other machines
    repeats: int = 0  # runs voided before this one because other processes competed

    @property
    def other_share(self) -> float:
        return self.other_cpu / (self.wall * (os.cpu_count() or 1)) if self.wall else 0.0


def _own_cpu() -> float:
    mine, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime


def _machine_cpu() -> tuple[float, float]:
    """Busy CPU seconds of every process since boot (guest time is already inside user), and steal."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq, t.steal


def _adopt_orphans() -> None:
    """Have orphaned descendants (the multiprocess executor's forkserver and the step processes it forks,
    Dagster's log tailers) re-parented to this process instead of init, so their CPU counts as the run's."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _reap_orphans() -> None:
    """Wait (at most 10 s) for adopted descendants to exit, which adds their CPU time to ours."""
    deadline = time.monotonic() + REAP_SECONDS
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # no children left
            return
        if pid == 0:
            time.sleep(0.05)


def wait_for_quiet() -> None:
    """Return once all cores together have been under 15% busy for 3 s running (at most 2 min)."""
    started, calm, told = time.monotonic(), 0, False
    while calm < QUIET_SECONDS:
        busy = psutil.cpu_percent(interval=1)
        calm = calm + 1 if busy < QUIET_BUSY_PERCENT else 0
        if calm == 0 and not told:
            print(f"  waiting for the machine to go quiet (CPU {busy:.0f}% busy)", flush=True)
            told = True
        if time.monotonic() - started > MAX_WAIT_SECONDS:
            print(f"  machine still busy after {MAX_WAIT_SECONDS} s (load {os.getloadavg()}); running anyway")
            return


def measure(run: Callable[[], T], retries: int = RETRIES) -> tuple[Timing, T]:
    """Time ``run()`` on a quiet machine, again if other processes competed; the least disturbed attempt."""
    attempts: list[tuple[Timing, T]] = []
    for repeats in range(retries + 1):
        with _measured() as timing:
            result = run()
        timing.repeats = repeats
        attempts.append((timing, result))
        if timing.other_share <= BUSY_SHARE:
            break
        again = "running it again" if repeats < retries else "keeping the least disturbed attempt"
        share, wall = timing.other_share, timing.wall
        print(f"  (others took {share:.0%} of the CPU during that {wall:.1f} s attempt; {again})", flush=True)
    return min(attempts, key=lambda attempt: attempt[0].other_share)


@contextlib.contextmanager
def _measured() -> Iterator[Timing]:
    """Wait for quiet, then time the block; the yielded ``Timing`` is filled in when it ends."""
    _adopt_orphans()
    wait_for_quiet()
    timing = Timing()
    wall, cpu, (busy, steal) = time.perf_counter(), _own_cpu(), _machine_cpu()
    yield timing
    timing.wall = time.perf_counter() - wall
    _reap_orphans()
    timing.cpu = _own_cpu() - cpu
    busy_now, steal_now = _machine_cpu()
    timing.other_cpu = max(0.0, busy_now - busy - timing.cpu)
    timing.steal = steal_now - steal
