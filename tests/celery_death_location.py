"""Test-only job for tests/test_celery.py's worker-death test; not part of the product's definitions.

``worker_death``: ``effect -> after``, on the executor ``OFFLOAD_EXECUTOR`` names (celery in the test).
``effect`` writes ``<root>/started-<pid>`` (the test kills that pid), sends one email to an outbox with an
idempotency key fixed by the run (the effect that must happen once however often the step runs), then
waits for ``<root>/gate``. ``after`` writes what it received to ``<root>/after``.
"""

import os
import time
from pathlib import Path

import dagster as dg

from offload.runtime.executors import executor_from_env
from resources.email import Email, OutboxEmail


class Root(dg.Config):
    root: str


@dg.op
def effect(context: dg.OpExecutionContext, config: Root) -> str:
    root = Path(config.root)
    (root / f"started-{os.getpid()}").write_text(context.run_id)
    outbox = OutboxEmail(directory=str(root / "outbox"))
    outbox.send(Email(to="ops@example.com", subject="once", html="<p>once</p>"), f"death/{context.run_id}")
    deadline = time.monotonic() + 300
    while not (root / "gate").exists():
        if time.monotonic() > deadline:
            raise dg.Failure("the test never opened the gate")
        time.sleep(0.05)
    return "effect done"


@dg.op
def after(config: Root, value: str) -> None:
    (Path(config.root) / "after").write_text(value)


@dg.job(executor_def=executor_from_env())
def worker_death() -> None:
    after(effect())
