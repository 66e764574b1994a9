"""Test-only code location (tests/crash_workspace.yaml) for the crash-resume and max-runtime tests.

``three_steps``: ``first -> second -> third``, each appending its name to ``<scratch>/steps.log`` when it
starts (the side-effect counter) and computing a value from its input, so the final output tells whether
every step's stored output was reused correctly. A step configured with ``block: true`` waits for the file
``<scratch>/gate`` before returning: the test kills the run worker while it waits.

``mapped_steps``: ``fan_out`` yields three mapped values (a, b, c), ``work[key]`` doubles each (the one
named by ``block_key`` waits on the gate), ``total`` sums them: 222 when every mapped step ran.

``held_start``: ``three_steps`` with an executor that, given a scratch directory, waits for the file
``<scratch>/start-gate`` while it is made: before the worker stores RUN_START, so the run stays STARTING
(it logs ``held start`` first). The test kills the run worker there.

``overtime``: one step that sleeps forever and, when ``stubborn``, swallows the interrupt Dagster sends on
termination, so only a kill ends it; the job declares a max runtime of 2 s with
``offload.runtime.max_runtime``. With ``child``, the step first starts a plain child process (its pid in
the step log). ``unbounded``: the same step without a max runtime, for the cancel test.

``slow_video``: the product's video graph with local resources under ``OFFLOAD_DATA_DIR`` (storage, outbox,
app database; file URLs allowed under it), steps in the run worker as in the default, and every encode
slowed on purpose to the clip's own pace (ffmpeg's ``-re``, patched into this process's
``media.encode_args``): an encode of an 8 s clip outlasts a crash's detection and resume, so a ffmpeg left
running by a killed worker would still be writing when the retry's encode starts.
Not part of the product's definitions.
"""

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg

from offload import paths
from offload.net.download import Downloader
from offload.runtime.max_runtime import max_runtime
from pipelines.video import media
from pipelines.video.jobs import process_video_graph, video_pipeline
from resources.database import AppDatabase
from resources.email import OutboxEmail
from resources.storage import LocalStorage


class Scratch(dg.ConfigurableResource):
    """A directory the test owns: the step log, the gate file."""

    root: str

    def mark(self, step: str) -> None:
        with (Path(self.root) / "steps.log").open("a") as log:
            log.write(f"{step}\n")

    def wait_for_gate(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not (Path(self.root) / "gate").exists():
            if time.monotonic() > deadline:
                raise dg.Failure("the test never opened the gate")
            time.sleep(0.05)


class StepConfig(dg.Config):
    block: bool = False


def _step(context: dg.OpExecutionContext, config: StepConfig, scratch: Scratch) -> None:
    scratch.mark(context.op.name)
    if config.block:
        scratch.wait_for_gate()


@dg.op
def first(context: dg.OpExecutionContext, config: StepConfig, scratch: Scratch) -> int:
    _step(context, config, scratch)
    return 6


@dg.op
def second(context: dg.OpExecutionContext, config: StepConfig, scratch: Scratch, value: int) -> int:
    _step(context, config, scratch)
    return value * 7


@dg.op
def third(context: dg.OpExecutionContext, config: StepConfig, scratch: Scratch, value: int) -> str:
    _step(context, config, scratch)
    return f"answer={value}"


@dg.job(executor_def=dg.in_process_executor)
def three_steps() -> None:
    third(second(first()))


class FanOutConfig(dg.Config):
    block_key: str = ""  # the mapped step ``work[<block_key>]`` waits on the gate


@dg.op(out=dg.DynamicOut(int))
def fan_out(context: dg.OpExecutionContext, scratch: Scratch):
    scratch.mark("fan_out")
    for key, value in {"a": 1, "b": 10, "c": 100}.items():
        yield dg.DynamicOutput(value, mapping_key=key)


@dg.op
def work(context: dg.OpExecutionContext, config: FanOutConfig, scratch: Scratch, value: int) -> int:
    key = context.get_mapping_key()
    scratch.mark(f"work[{key}]")
    if key == config.block_key:
        scratch.wait_for_gate()
    return value * 2


@dg.op
def total(context: dg.OpExecutionContext, scratch: Scratch, values: list[int]) -> int:
    scratch.mark("total")
    return sum(values)


@dg.job(executor_def=dg.in_process_executor)
def mapped_steps() -> None:
    total(fan_out().map(work).collect())


@dg.executor(name="held_start", config_schema={"scratch": dg.Field(str, default_value="")})
def held_start_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """The in-process executor, made only once ``<scratch>/start-gate`` exists (when given a scratch)."""
    from dagster._core.execution.retries import RetryMode
    from dagster._core.executor.in_process import InProcessExecutor

    root = str(init_context.executor_config["scratch"])
    if root:
        scratch = Scratch(root=root)
        scratch.mark("held start")
        deadline = time.monotonic() + 120
        while not (Path(root) / "start-gate").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return InProcessExecutor(retries=RetryMode.DISABLED)


@dg.job(executor_def=held_start_executor)
def held_start() -> None:
    third(second(first()))


class SleepConfig(dg.Config):
    stubborn: bool = False
    child: bool = False


@dg.op
def sleep_forever(context: dg.OpExecutionContext, config: SleepConfig, scratch: Scratch) -> None:
    if config.child:  # a plain child (not offload.process_tree's): it would outlive a killed worker
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        scratch.mark(f"child {child.pid}")
    scratch.mark("sleep_forever")
    while True:
        try:
            time.sleep(0.2)
        except BaseException:  # Dagster's interrupt: a stubborn step ignores it
            if not config.stubborn:
                raise
            scratch.mark("ignored interrupt")


@dg.job(executor_def=dg.in_process_executor, tags=max_runtime(2))
def overtime() -> None:
    sleep_forever()


@dg.job(executor_def=dg.in_process_executor)
def unbounded() -> None:
    sleep_forever()


def _at_native_rate(encode_args: Callable[..., list[str]]) -> Callable[..., list[str]]:
    """``encode_args`` with ``-re`` before the input: ffmpeg reads the source no faster than it plays."""

    def slowed(*args: Any, **kwargs: Any) -> list[str]:
        command = encode_args(*args, **kwargs)
        at = command.index("-i")
        return [*command[:at], "-re", *command[at:]]

    return slowed


media.encode_args = _at_native_rate(media.encode_args)

_data = paths.data_dir()
slow_video = process_video_graph.to_job(
    name="slow_video",
    config=video_pipeline.config_mapping,
    executor_def=dg.in_process_executor,
    resource_defs={
        "storage": LocalStorage(root=str(_data / "storage")),
        "email": OutboxEmail(directory=str(_data / "outbox")),
        "downloader": Downloader(file_roots=[str(_data)]),
        "database": AppDatabase(url=f"sqlite:///{_data / 'app.db'}"),
    },
)

defs = dg.Definitions(
    jobs=[three_steps, mapped_steps, held_start, overtime, unbounded, slow_video],
    resources={"scratch": Scratch.configure_at_launch()},
)


def mapped_steps_job() -> dg.JobDefinition:
    """``mapped_steps`` with its resources bound, for ``dg.reconstructable`` (tests/test_reexecution.py)."""
    return defs.resolve_job_def("mapped_steps")
