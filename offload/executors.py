"""How a run's steps are executed, chosen once by ``OFFLOAD_EXECUTOR``.

``in_process`` (default): every step in the run worker, one after another. On a small machine this is the
fastest choice for FFmpeg work, because each encoder already uses every core: measured on 2 cores, the
video pipeline on a 30 s 720p clip took 24 s in process and 35 s with parallel step processes (47 s with
the default spawn start method), against 23 s for bare ffmpeg (benchmarks/pipeline_vs_ffmpeg.py).
``multiprocess``: one process per step, parallel branches run at once (thumbnail and each format), forked
from a server that has already imported the code so a step starts in a fraction of a second. Use it on
machines with more cores than one encoder can use.
"""

from __future__ import annotations

import os

import dagster as dg

EXECUTORS = ("in_process", "multiprocess")


def executor_from_env() -> dg.ExecutorDefinition:
    name = os.environ.get("OFFLOAD_EXECUTOR", "in_process").strip() or "in_process"
    if name == "in_process":
        return dg.in_process_executor
    if name == "multiprocess":
        return dg.multiprocess_executor.configured(
            {"start_method": {"forkserver": {"preload_modules": ["dagster", "definitions"]}}}
        )
    raise ValueError(f"OFFLOAD_EXECUTOR: must be one of {', '.join(EXECUTORS)}, got {name!r}")
