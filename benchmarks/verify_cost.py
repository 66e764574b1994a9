"""verify_cost: what verifying a rendition before upload (``media.verify``: decode it end to end) adds to
its encode.

Every transcode step decodes its output once before renaming it into place (issue 13: a corrupt file must
never reach storage). This times, for each format on the same 30 s 640x360 30 fps clip with audio (the
issue's clip size), the encode alone (the baseline) against the encode followed by the verification.
Target: ratio of median wall times <= 1.25 (verification costs at most a quarter of an encode).
"""

from __future__ import annotations

import shutil
from functools import partial
from typing import Any

from benchmarks import inputs, report
from benchmarks.machine import Timing, measure
from benchmarks.pipeline_cli import scratch_dir
from pipelines.video import media

TARGET = 1.25


def run() -> dict[str, Any]:
    clip = inputs.clip_360p(30)
    info = media.probe(clip)
    work = scratch_dir("verify-")
    encoded: list[Timing] = []
    verified: list[Timing] = []
    try:
        for number, fmt in enumerate(media.FORMATS, start=1):
            target = work / f"out.{fmt}"
            args = media.encode_args(fmt, info, clip, target)
            encode, _ = measure(partial(media.run_ffmpeg, args, media.output_seconds(fmt, info)))
            check, _ = measure(partial(media.verify, target, fmt, info))
            both = Timing(
                wall=encode.wall + check.wall,
                cpu=encode.cpu + check.cpu,
                other_cpu=encode.other_cpu + check.other_cpu,
                steal=encode.steal + check.steal,
                repeats=encode.repeats + check.repeats,
            )
            report.run_line(number, f"{fmt} encode", encode)
            report.run_line(number, f"{fmt} verify", check)
            encoded.append(encode)
            verified.append(both)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures = report.compare(
        ("encode + verify (mp4, webm, gif)", verified),
        ("encode alone", encoded),
        TARGET,
        "with/without verification",
    )
    return {"input": inputs.describe(clip, info), **figures}
