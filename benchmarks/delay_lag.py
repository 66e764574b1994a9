"""Delayed runs: from a run's due time to its launch and to its first step, against the same job triggered
without a delay (the reference: what any run costs from "go" to its first step).

One ``dagster dev`` with offload's embedded instance and this project's code location. Each round triggers
``hello_world`` once with ``delay`` (due 3 s after the trigger, plus a fraction of a second that moves each
round's due time across the daemon's 1 s cycle) and once without; rounds run one at a time. Lag = the
``RUN_STARTING`` (launch) and first ``STEP_START`` event timestamps minus the due time (delayed) or minus
the wall clock just before the trigger call (reference), all on this machine's clock. Prints p50 and max.

    .venv/bin/python -m benchmarks.delay_lag [--rounds 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.support import dagster_deployment
from benchmarks.trigger_to_start import milestones
from offload.client import Client
from offload.trigger_options import DELAY_UNTIL_TAG


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.delay_lag")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args(argv)
    delayed: list[dict[str, float]] = []
    reference: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        services = dagster_deployment.start(Path(tmp) / "offload")
        client = Client(services.url)
        try:
            for n in range(args.rounds):
                handle = client.trigger("hello_world", {"name": f"d{n}"}, delay=3 + (n % 8) * 0.125)
                due = float(client.retrieve(handle.id).tags[DELAY_UNTIL_TAG])
                seen = milestones(services.url, handle.id)
                delayed.append({"launch": seen["launched"] - due, "first_step": seen["first_step"] - due})
                before = time.time()
                handle = client.trigger("hello_world", {"name": f"r{n}"})
                seen = milestones(services.url, handle.id)
                reference.append(
                    {"launch": seen["launched"] - before, "first_step": seen["first_step"] - before}
                )
        finally:
            client.close()
            services.stop()

    def stats(samples: list[dict[str, float]], key: str) -> dict[str, float]:
        values = [sample[key] for sample in samples]
        return {"p50": round(statistics.median(values), 3), "max": round(max(values), 3)}

    report = {
        "rounds": args.rounds,
        "delayed_from_due": {key: stats(delayed, key) for key in ("launch", "first_step")},
        "undelayed_from_trigger": {key: stats(reference, key) for key in ("launch", "first_step")},
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
