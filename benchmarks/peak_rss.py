"""peak_rss: the pipeline's memory does not grow with the input: a >= 1 GiB upload against a 10 s one.

Both inputs are the same kind of file (1280x720 30 fps MJPEG at top quality, ~12.5 MiB/s, with audio), 90 s
(~1.1 GiB) and 10 s; both run the whole ``video_pipeline`` through the CLI with formats mp4 and webm. The
CLI process and every descendant (each ffmpeg) are sampled every 100 ms. Target: the peak of the tree's
summed RSS <= 300 MiB on the big input (the strictest figure: what the job costs the machine).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from benchmarks import inputs, report
from benchmarks.machine import measure
from benchmarks.memory import MIB, TreePeak
from benchmarks.pipeline_cli import dagster_home, run_pipeline
from pipelines.video import media

FORMATS = ["mp4", "webm"]
BIG_SECONDS, SMALL_SECONDS = 90, 10
TARGET_MIB = 300
FIGURES = {
    "peak_tree_sum_mib": "(a) peak of summed RSS, whole tree",
    "peak_tree_pss_mib": "    peak of summed PSS, whole tree",
    "peak_single_process_mib": "(b) peak RSS, largest process",
}


def _sampled_run(source: Path, home: Path) -> TreePeak:
    samplers: list[TreePeak] = []

    def monitor(pid: int) -> TreePeak:
        samplers.append(TreePeak(pid))
        return samplers[0]

    run_pipeline(source, FORMATS, home, monitor=monitor)
    return samplers[0]


def _measure(source: Path, home: Path) -> dict[str, Any]:
    # Memory hardly depends on other processes, so a disturbed run is kept rather than repeated.
    timing, peak = measure(partial(_sampled_run, source, home), retries=0)
    info = media.probe(source)
    figures = peak.as_mib()
    total, single = figures["peak_tree_sum_mib"], figures["peak_single_process_mib"]
    size = source.stat().st_size / MIB
    print(
        f"  {info.duration:5.1f} s input, {size:6.0f} MiB: run {timing.wall:5.1f} s, "
        f"tree sum {total:6.1f} MiB, largest process {single:6.1f} MiB",
        flush=True,
    )
    return {"input": inputs.describe(source, info), "run_seconds": timing.wall, **figures}


def run() -> dict[str, Any]:
    big_source, small_source = inputs.heavy_720p(BIG_SECONDS), inputs.heavy_720p(SMALL_SECONDS)
    if big_source.stat().st_size < inputs.GIB:
        raise RuntimeError(f"{big_source} is {big_source.stat().st_size} bytes, under 1 GiB")
    with dagster_home() as home:
        small = _measure(small_source, home)
        big = _measure(big_source, home)
    print(f"  {'':<36} {SMALL_SECONDS:>5} s input {BIG_SECONDS:>5} s input  big/small")
    for key, label in FIGURES.items():
        print(f"  {label:<36} {small[key]:>7.1f} MiB {big[key]:>7.1f} MiB  {big[key] / small[key]:9.3f}")
    print("  peak RSS of each process, by name:")
    for name, rss in big["peak_by_process_mib"].items():
        print(f"    {name:<34} {small['peak_by_process_mib'].get(name, 0):>7.1f} MiB {rss:>7.1f} MiB")
    line = report.verdict(big["peak_tree_sum_mib"], TARGET_MIB, "(a) summed RSS, big input, MiB", digits=1)
    report.verdict(
        big["peak_single_process_mib"], TARGET_MIB, "(b) largest process, big input, MiB", digits=1
    )
    return {
        "formats": FORMATS,
        "small": small,
        "big": big,
        "growth_ratio": big["peak_tree_sum_mib"] / small["peak_tree_sum_mib"],
        "target_mib": TARGET_MIB,
        "summary": line,
    }
