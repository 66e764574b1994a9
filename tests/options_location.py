"""Test-only code location (tests/options_workspace.yaml) for the trigger options tests.

``nap`` (queue ``naps``, one run at a time) and ``free_nap`` (queue ``free_naps``, no limit): one step
that waits ``seconds``, or until the file ``gate`` exists when one is given (a run holding the only slot
for as long as the test wants), then returns ``{"label": label}``. Not part of the product's definitions.
"""

import time
from pathlib import Path

import dagster as dg

from offload.payload import payload_mapping
from offload.result import job_result
from offload.runtime.concurrency import Queue

GATE_DEADLINE = 300.0  # a gate never opened (a failed test) ends the run after this long


class NapPayload(dg.Config):
    label: str
    seconds: float = 0.0
    gate: str | None = None


@dg.op
def nap(config: NapPayload) -> dg.Output[dict[str, str]]:
    if config.gate:
        give_up = time.monotonic() + GATE_DEADLINE
        while not Path(config.gate).exists() and time.monotonic() < give_up:
            time.sleep(0.1)
    else:
        time.sleep(config.seconds)
    return job_result({"label": config.label})


def _config(payload: NapPayload) -> dict:
    return {"ops": {"nap": {"config": payload.model_dump()}}}


@dg.job(config=payload_mapping(NapPayload, _config), tags=Queue("naps", limit=1).job_tags())
def nap_job() -> None:
    nap()


@dg.job(config=payload_mapping(NapPayload, _config), tags=Queue("free_naps").job_tags())
def free_nap() -> None:
    nap()


defs = dg.Definitions(jobs=[nap_job, free_nap])
