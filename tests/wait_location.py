"""Test-only code location (tests/wait_workspace.yaml) for tests/test_waits.py and benchmarks/waits.py.

Each step that matters appends ``<step> <event>`` to ``$OFFLOAD_DATA_DIR/marks/<mark>.log`` (when the
payload names a ``mark``): the side-effect counter the tests read to prove no finished step ran again.

* ``sleeper``: ``prepare`` (a side effect) -> ``pause`` (``wait.sleep(seconds)``), result ``{slept}``.
* ``nap``: one step that waits until ``until``; ``sleepy``: the same with ``time.sleep`` (the baseline).
* ``approval``: ``ask`` creates a token and records its id and URL -> ``decide`` waits for it.
* ``flaky_after_wait``: one step, step retry policy 1: waits, then fails on its first attempt.
* ``nest``: ``levels`` deep child runs (``run_child``), the innermost sleeps.
* ``fan_out``: waits on ``children`` runs of ``limited`` (queue limit 2).
* The product's jobs that wait: ``publish_article``, ``welcome_user`` (and children), ``batch_processor``.
"""

import json
import os
import time
from pathlib import Path
from typing import Any

import dagster as dg

from offload import paths, wait
from offload.client.children import run_child, run_children
from offload.payload import payload_mapping
from offload.result import job_result
from offload.runtime.concurrency import Queue
from pipelines.batch import batch_processor
from pipelines.content import publish_article
from pipelines.hello_world import hello_world
from pipelines.onboarding import welcome_user
from pipelines.typed_task import typed_task
from resources import resources_for

QUEUE = Queue("waits")
LIMITED = Queue("limited", limit=2)


def mark(name: str, step: str, event: str, data: Any = None) -> None:
    if not name:
        return
    folder = Path(os.environ["OFFLOAD_DATA_DIR"]) / "marks"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{name}.log").open("a") as log:
        log.write(json.dumps([step, event, data, time.time()]) + "\n")


class SleepPayload(dg.Config):
    seconds: float = 10.0
    until: float = 0.0  # a Unix time: wait until then instead
    mark: str = ""


@dg.op
def prepare(context: dg.OpExecutionContext, config: SleepPayload) -> float:
    mark(config.mark, "prepare", "run")
    return config.seconds


@dg.op
def pause(context: dg.OpExecutionContext, config: SleepPayload, seconds: float) -> dg.Output[dict[str, Any]]:
    mark(config.mark, "pause", "enter")
    if config.until:
        wait.until(context, config.until)
    else:
        wait.sleep(context, seconds)
    mark(config.mark, "pause", "after")
    return job_result({"slept": seconds})


@dg.job(
    config=payload_mapping(
        SleepPayload,
        lambda p: {"ops": {"prepare": {"config": p.model_dump()}, "pause": {"config": p.model_dump()}}},
    ),
    tags=QUEUE.job_tags(),
)
def sleeper() -> None:
    pause(prepare())


class NapPayload(dg.Config):
    until: float


@dg.op
def nap_step(context: dg.OpExecutionContext, config: NapPayload) -> dg.Output[dict[str, Any]]:
    wait.until(context, config.until)
    return job_result({"woke": True})


@dg.job(
    config=payload_mapping(NapPayload, lambda p: {"ops": {"nap_step": {"config": p.model_dump()}}}),
    tags=QUEUE.job_tags(),
)
def nap() -> None:
    """The smallest job that waits: one step (tests/test_waits.py's 200 runs, benchmarks/waits.py)."""
    nap_step()


class SleepyPayload(dg.Config):
    seconds: float = 60.0


@dg.op
def sleepy_step(context: dg.OpExecutionContext, config: SleepyPayload) -> dg.Output[dict[str, Any]]:
    time.sleep(config.seconds)  # what a stock Dagster step does to wait: holds its worker and slot
    return job_result({"woke": True})


@dg.job(
    config=payload_mapping(SleepyPayload, lambda p: {"ops": {"sleepy_step": {"config": p.model_dump()}}}),
    tags=QUEUE.job_tags(),
)
def sleepy() -> None:
    """``nap``'s baseline for benchmarks/waits.py: the same wait as a sleep inside the step."""
    sleepy_step()


class ApprovalPayload(dg.Config):
    timeout: float = 3600.0
    mark: str = ""


@dg.op
def ask(context: dg.OpExecutionContext, config: ApprovalPayload) -> str:
    token = wait.create_token(context, timeout=config.timeout, tags={"kind": "test"})
    mark(config.mark, "ask", "token", {"id": token.id, "url": token.url})
    return token.id


@dg.op
def decide(
    context: dg.OpExecutionContext, config: ApprovalPayload, token_id: str
) -> dg.Output[dict[str, Any]]:
    mark(config.mark, "decide", "enter")
    result = wait.for_token(context, token_id)
    mark(config.mark, "decide", "after", result.data)
    return job_result({"ok": result.ok, "data": result.data, "timed_out": result.timed_out})


@dg.job(
    config=payload_mapping(
        ApprovalPayload,
        lambda p: {"ops": {"ask": {"config": p.model_dump()}, "decide": {"config": p.model_dump()}}},
    ),
    tags=QUEUE.job_tags(),
)
def approval() -> None:
    decide(ask())


@dg.op(retry_policy=dg.RetryPolicy(max_retries=1))
def wait_then_fail_once(context: dg.OpExecutionContext, config: SleepPayload) -> dg.Output[dict[str, Any]]:
    mark(config.mark, "step", "enter", context.retry_number)
    wait.sleep(context, config.seconds)
    if context.retry_number == 0:
        mark(config.mark, "step", "fail")
        raise RuntimeError("fails once after the wait")
    return job_result({"attempt": context.retry_number})


@dg.job(
    config=payload_mapping(
        SleepPayload, lambda p: {"ops": {"wait_then_fail_once": {"config": p.model_dump()}}}
    ),
    tags=QUEUE.job_tags(),
)
def flaky_after_wait() -> None:
    wait_then_fail_once()


class NestPayload(dg.Config):
    levels: int = 2
    seconds: float = 8.0
    mark: str = ""


@dg.op
def level(context: dg.OpExecutionContext, config: NestPayload) -> dg.Output[dict[str, Any]]:
    mark(config.mark, f"level{config.levels}", "enter")
    if config.levels == 0:
        wait.sleep(context, config.seconds)
        return job_result({"level": 0})
    child = run_child(
        context, "nest", {"levels": config.levels - 1, "seconds": config.seconds, "mark": config.mark}
    )
    return job_result({"level": config.levels, "child": child})


@dg.job(
    config=payload_mapping(NestPayload, lambda p: {"ops": {"level": {"config": p.model_dump()}}}),
    tags=QUEUE.job_tags(),
)
def nest() -> None:
    level()


class FanPayload(dg.Config):
    children: int = 50


@dg.op
def fan(context: dg.OpExecutionContext, config: FanPayload) -> dg.Output[dict[str, Any]]:
    outputs = run_children(context, [("limited", {"index": index}) for index in range(config.children)])
    return job_result({"indexes": sorted(output["index"] for output in outputs)})


@dg.job(
    config=payload_mapping(FanPayload, lambda p: {"ops": {"fan": {"config": p.model_dump()}}}),
    tags=QUEUE.job_tags(),
)
def fan_out() -> None:
    fan()


class LimitedPayload(dg.Config):
    index: int = 0


@dg.op
def limited_step(context: dg.OpExecutionContext, config: LimitedPayload) -> dg.Output[dict[str, Any]]:
    return job_result({"index": config.index})


@dg.job(
    config=payload_mapping(LimitedPayload, lambda p: {"ops": {"limited_step": {"config": p.model_dump()}}}),
    tags=LIMITED.job_tags(),
)
def limited() -> None:
    limited_step()


defs = dg.Definitions(
    jobs=[sleeper, nap, sleepy, approval, flaky_after_wait, nest, fan_out, limited, publish_article,
          welcome_user, hello_world, typed_task, batch_processor],
    resources=resources_for(paths.environment()),
    executor=dg.in_process_executor,
)  # fmt: skip
