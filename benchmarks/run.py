"""Run every benchmark (or the named ones), one after another, and keep each one's figures as JSON.

``python -m benchmarks [name ...]`` or ``python benchmarks/run.py [name ...]`` from the project root.
They run one at a time on purpose: each encoder already uses every core.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import peak_rss, pipeline_vs_ffmpeg, report, transcode_overhead, verify_cost

BENCHMARKS: dict[str, Callable[[], dict[str, Any]]] = {
    "transcode_overhead": transcode_overhead.run,
    "pipeline_vs_ffmpeg": pipeline_vs_ffmpeg.run,
    "peak_rss": peak_rss.run,
    "verify_cost": verify_cost.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="name", help=f"any of {', '.join(BENCHMARKS)}; all by default"
    )
    names = parser.parse_args(argv).names or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    summaries = {}
    for name in names:
        print(f"\n== {name}", flush=True)
        environment = report.environment()  # per benchmark: the commit can move while others run
        started = time.perf_counter()
        data = BENCHMARKS[name]()
        data = {
            "benchmark": name,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "wall_seconds": round(time.perf_counter() - started, 1),
            "environment": environment,
            **data,
        }
        print(f"  results: {report.write(name, data)}")
        summaries[name] = data["summary"]
    print("\n== summary")
    for name, summary in summaries.items():
        print(f"  {name:<20} {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
