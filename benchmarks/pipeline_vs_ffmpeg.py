"""pipeline_vs_ffmpeg: the whole ``video_pipeline`` through the real CLI against a bare ffmpeg script.

The pipeline pays for Dagster (start-up, loading the code, run and event storage), the download copy, the
probe, the step machinery and the upload copy. The baseline is the least a script could do for the same
outputs: ffmpeg with the identical arguments (``media.thumbnail_args``/``encode_args``) one after another,
each output copied to an output directory. Alternated, medians compared; target: wall ratio <= 1.15. One
extra run with ``OFFLOAD_EXECUTOR=multiprocess`` is reported for information.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import inputs, report
from benchmarks.machine import Timing, measure
from benchmarks.pipeline_cli import dagster_home, run_breakdown, run_pipeline, scratch_dir
from pipelines.video import media

FORMATS = ["mp4", "webm", "gif"]
RUNS = 3
TARGET = 1.15


def _bare_script(source: Path, info: media.VideoInfo) -> tuple[Timing, dict[str, int]]:
    """Thumbnail and every format with bare ffmpeg, one after another, each copied out; the arguments are
    computed before timing, as a script would hard-code them."""
    work, out = scratch_dir("bare-work-"), scratch_dir("bare-out-")
    jobs = [(work / "thumbnail.jpg", media.thumbnail_args(info, source, work / "thumbnail.jpg"))]
    for fmt in FORMATS:
        jobs.append((work / f"output.{fmt}", media.encode_args(fmt, info, source, work / f"output.{fmt}")))

    def script() -> None:
        for target, args in jobs:
            command = [media.ffmpeg_exe(), "-loglevel", "error", "-nostats", *args]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            shutil.copyfile(target, out / target.name)

    try:
        timing, _ = measure(script)
        return timing, {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)


def _pipeline(source: Path, home: Path, executor: str) -> tuple[Timing, dict[str, int], dict[str, float]]:
    """One timed run through the CLI; what it stored; where its time went."""
    timing, run = measure(lambda: run_pipeline(source, FORMATS, home, executor=executor))
    return timing, run.outputs, run_breakdown(home, run)


def run() -> dict[str, Any]:
    clip = inputs.clip_720p(30)
    info = media.probe(clip)
    timings: dict[str, list[Timing]] = {"pipeline": [], "bare": []}
    outputs: dict[str, dict[str, int]] = {}
    breakdowns: list[dict[str, float]] = []  # per pipeline run: the run and each step, from the event log
    with dagster_home() as home:
        for number in range(1, RUNS + 1):
            for which in ("pipeline", "bare") if number % 2 else ("bare", "pipeline"):
                if which == "pipeline":
                    timing, outputs[which], breakdown = _pipeline(clip, home, "in_process")
                    breakdowns.append(breakdown)
                else:
                    timing, outputs[which] = _bare_script(clip, info)
                timings[which].append(timing)
                report.run_line(number, which, timing)
        multiprocess, outputs["multiprocess"], multiprocess_breakdown = _pipeline(clip, home, "multiprocess")
        report.run_line(1, "multiprocess", multiprocess)
    figures = report.compare(
        ("video_pipeline via dagster CLI", timings["pipeline"]),
        ("bare ffmpeg script", timings["bare"]),
        TARGET,
        "pipeline/bare",
    )
    bare = figures["medians"]["bare ffmpeg script"]["wall"]
    steps = {key: report.median([b[key] for b in breakdowns]) for key in breakdowns[0]}
    cli = figures["medians"]["video_pipeline via dagster CLI"]["wall"]
    run_seconds = steps.pop("run")
    print(f"  inside the pipeline (medians): the run took {run_seconds:.2f} s of the CLI's {cli:.2f} s:")
    print("    " + ", ".join(f"{key} {seconds:.2f}" for key, seconds in steps.items()))
    extra = f"{multiprocess.wall:.2f} s, {multiprocess.wall / bare:.3f}x bare"
    print(f"  (extra) OFFLOAD_EXECUTOR=multiprocess, one run: {extra}")
    return {
        "input": inputs.describe(clip, info),
        "formats": FORMATS,
        "output_bytes": outputs,
        "pipeline_breakdowns": breakdowns,
        "multiprocess": {
            "run": asdict(multiprocess),
            "ratio": multiprocess.wall / bare,
            "breakdown": multiprocess_breakdown,
        },
        **figures,
    }
