"""Peak resident memory of a process tree, sampled from a background thread.

Every ``interval`` seconds it reads the memory of the root and of every descendant (ffmpeg included) and
keeps the peak of their summed RSS, the peak of their summed PSS, and the peak RSS of the largest single
process. Summed RSS counts a page shared by several processes (libraries) once per process, so it errs
high; PSS splits shared pages between their sharers, so its sum is what the tree really holds. A spike
shorter than the interval can be missed.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

import psutil

MIB = 1024**2


class TreePeak:
    def __init__(self, pid: int, interval: float = 0.1):
        self._root = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)
        self.samples = 0
        self.peak_total = 0  # bytes: the largest RSS sum over the tree at one instant
        self.peak_total_pss = 0  # bytes: the largest PSS sum over the tree at one instant
        self.peak_single = 0  # bytes: the largest single process
        self.peak_by_name: dict[str, int] = {}  # process name -> its largest RSS

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _sample_until_stopped(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval)

    def _sample(self) -> None:
        try:
            tree = [self._root, *self._root.children(recursive=True)]
        except psutil.Error:  # the root has exited
            return
        total = total_pss = 0
        for process in tree:
            try:
                memory, name = process.memory_full_info(), process.name()
            except psutil.Error:  # exited between listing and reading
                continue
            rss = memory.rss
            if not rss:  # a finished child not yet reaped: no memory, and only a truncated name
                continue
            total += rss
            total_pss += memory.pss
            self.peak_single = max(self.peak_single, rss)
            self.peak_by_name[name] = max(self.peak_by_name.get(name, 0), rss)
        self.peak_total = max(self.peak_total, total)
        self.peak_total_pss = max(self.peak_total_pss, total_pss)
        self.samples += 1

    def as_mib(self) -> dict[str, Any]:
        return {
            "peak_tree_sum_mib": round(self.peak_total / MIB, 1),
            "peak_tree_pss_mib": round(self.peak_total_pss / MIB, 1),
            "peak_single_process_mib": round(self.peak_single / MIB, 1),
            "peak_by_process_mib": {name: round(v / MIB, 1) for name, v in sorted(self.peak_by_name.items())},
            "samples": self.samples,
        }
