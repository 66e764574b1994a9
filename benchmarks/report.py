"""Printing a measurement beside its baseline, and keeping the figures as JSON in ``benchmarks/results/``."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import dagster as dg

from benchmarks.machine import Timing
from offload.paths import PROJECT_ROOT
from pipelines.video.media import ffmpeg_exe

RESULTS = Path(__file__).resolve().parent / "results"


def median(values: list[float]) -> float:
    return statistics.median(values)


def run_line(number: int, label: str, timing: Timing) -> None:
    """One run as it finishes, with the share of the cores that other processes took meanwhile."""
    others = f"others {timing.other_share:4.0%} of CPU"
    print(
        f"  run {number} {label:<12} {timing.wall:7.2f} s wall {timing.cpu:7.2f} s CPU   {others}", flush=True
    )


def verdict(value: float, target: float, what: str, digits: int = 3) -> str:
    mark = "ok" if value <= target else "OVER TARGET"
    line = f"{what} = {value:.{digits}f}  (target <= {target}: {mark})"
    print(f"  {line}", flush=True)
    return line


def compare(
    measured: tuple[str, list[Timing]], baseline: tuple[str, list[Timing]], target: float, ratio_name: str
) -> dict[str, Any]:
    """Medians side by side, the wall-time ratio against ``target``, and beside it the CPU-time ratio and
    the median of each round's own wall ratio (its two runs are close in time, so under similar load)."""
    medians = {}
    for label, timings in (measured, baseline):
        walls, cpus = [t.wall for t in timings], [t.cpu for t in timings]
        medians[label] = {"wall": median(walls), "cpu": median(cpus)}
        runs = " ".join(f"{wall:.2f}" for wall in walls)
        print(f"  {label:<32} median {median(walls):7.2f} s wall {median(cpus):7.2f} s CPU   (runs: {runs})")
    mine, base = medians[measured[0]], medians[baseline[0]]
    ratio, cpu_ratio = mine["wall"] / base["wall"], mine["cpu"] / base["cpu"]
    paired = median([m.wall / b.wall for m, b in zip(measured[1], baseline[1], strict=True)])
    summary = verdict(ratio, target, f"{ratio_name} wall")
    print(
        f"  {ratio_name} CPU = {cpu_ratio:.3f}; median of the rounds' wall ratios = {paired:.3f}", flush=True
    )
    return {
        "runs": {
            label: [asdict(t) | {"other_share": t.other_share} for t in timings]
            for label, timings in (measured, baseline)
        },
        "medians": medians,
        "ratio": ratio,
        "cpu_ratio": cpu_ratio,
        "paired_wall_ratio": paired,
        "target": target,
        "summary": summary,
    }


def environment() -> dict[str, Any]:
    """What the figures depend on: the machine, the versions, and the commit measured."""
    ffmpeg = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    return {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "dagster": dg.__version__,
        "ffmpeg": ffmpeg,
        "commit": commit.stdout.strip() or None,
        "load_average_at_start": os.getloadavg(),
    }


def write(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
