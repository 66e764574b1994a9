"""transcode_overhead: what the mp4 step's code path adds to the ffmpeg it runs.

The step runs ``media.run_ffmpeg`` with ``-progress pipe:1`` read line by line in Python and a progress
callback that logs every 10%. This times that call against the bare ffmpeg binary given the same arguments
(without ``-progress``), on the same 30 s 1280x720 30 fps clip with audio, alternating the two so drift
in the machine's speed falls on both. Target: ratio of median wall times <= 1.05.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import dagster as dg

from benchmarks import inputs, report
from benchmarks.machine import Timing, measure
from benchmarks.pipeline_cli import scratch_dir
from offload.log import Progress, StepLog
from pipelines.video import media

RUNS = 3
TARGET = 1.05


def _step_path(context: dg.OpExecutionContext, args: list[str], seconds: float) -> None:
    """The step's own call: ``run_ffmpeg`` with the step's progress logger as the callback."""
    progress = Progress(StepLog(context), "mp4")  # logs "mp4 10%"... to the console
    media.run_ffmpeg(args, seconds, on_progress=progress.update)


def _bare(args: list[str]) -> None:
    """The same command ``run_ffmpeg`` builds, minus ``-progress pipe:1``."""
    command = [media.ffmpeg_exe(), "-loglevel", "error", "-nostats", *args]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def run() -> dict[str, Any]:
    clip = inputs.clip_720p(30)
    info = media.probe(clip)
    seconds = media.output_seconds("mp4", info)
    context = (
        dg.build_op_context()
    )  # made before timing: a step is handed its context (the first costs ~0.6 s)
    work = scratch_dir("transcode-")
    targets = {"step": work / "step.mp4", "bare": work / "bare.mp4"}
    timings: dict[str, list[Timing]] = {"step": [], "bare": []}
    try:
        for number in range(1, RUNS + 1):
            # Alternate which goes first too, so neither always runs on a cooler (or warmer) machine.
            for which in ("step", "bare") if number % 2 else ("bare", "step"):
                args = media.encode_args("mp4", info, clip, targets[which])
                timing, _ = measure(
                    partial(_step_path, context, args, seconds) if which == "step" else partial(_bare, args)
                )
                timings[which].append(timing)
                report.run_line(number, which, timing)
        sizes = {which: Path(path).stat().st_size for which, path in targets.items()}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures = report.compare(
        ("step: run_ffmpeg + progress", timings["step"]),
        ("bare ffmpeg, same arguments", timings["bare"]),
        TARGET,
        "step/bare",
    )
    return {"input": inputs.describe(clip, info), "output_bytes": sizes, **figures}
