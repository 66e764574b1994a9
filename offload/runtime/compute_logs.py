"""Steps' stdout and stderr ("compute logs"), kept where Dagster keeps them, without four processes a step.

Dagster's ``LocalComputeLogManager`` redirects a step's stdout and stderr into files (what the UI's
stdout/stderr tab shows) and also copies them back to the process's own streams: one ``tail -F`` process
and one Python watcher process per stream, started and stopped around every step. In a forked run worker
(offload/runtime/forkserver.py) those four processes cost about 55 ms of CPU and 40 ms of waiting per
step, a third of a trivial run's worker (``benchmarks/run_throughput.py``), to echo output onto the
terminal of whoever started ``offload dev``. :class:`OffloadComputeLogManager` writes the same files in
the same places, read by the same UI, and only skips the echo in forked workers
(:func:`stop_mirroring`, called by the fork server in each worker): ``offload job execute``, ``dagster
job execute`` and step subprocesses still print to their terminal as before.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from dagster import Field, Float, StringSource
from dagster._core.execution.compute_logs import redirect_to_file
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.local_compute_log_manager import IO_TYPE_EXTENSION, LocalComputeLogManager
from dagster._serdes import ConfigurableClassData
from dagster._utils import ensure_file, touch_file

_mirror = [True]  # False in a forked run worker


def stop_mirroring() -> None:
    """This process's steps' output goes to their log files only (a forked worker: nobody reads its
    terminal but the process that started ``offload dev``)."""
    _mirror[0] = False


class OffloadComputeLogManager(LocalComputeLogManager):
    """Dagster's local compute logs; ``base_dir`` defaults to the instance's ``storage`` directory, where
    Dagster's own default manager keeps them."""

    def __init__(
        self,
        base_dir: str | None = None,
        polling_timeout: float | None = None,
        inst_data: ConfigurableClassData | None = None,
    ):
        super().__init__(base_dir or "", polling_timeout, inst_data)

    @property
    def _base_dir(self) -> str:
        """Read by Dagster's methods; without a setting, known only once the instance registers itself."""
        if self._configured_dir:
            return self._configured_dir
        return os.path.join(self._instance.root_directory, "storage")

    @_base_dir.setter
    def _base_dir(self, value: str) -> None:
        self._configured_dir = value

    @classmethod
    def config_type(cls) -> Any:
        return {
            "base_dir": Field(StringSource, is_required=False),
            "polling_timeout": Field(Float, is_required=False),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> OffloadComputeLogManager:
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def capture_logs(self, log_key: Sequence[str]) -> Generator[CapturedLogContext, None, None]:
        if _mirror[0]:
            with super().capture_logs(log_key) as context:
                yield context
            return
        out = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDOUT])
        err = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDERR])
        with ExitStack() as stack:
            for stream, path in ((sys.stdout, out), (sys.stderr, err)):
                ensure_file(path)
                stack.enter_context(redirect_to_file(stream, path))
            yield CapturedLogContext(log_key)
        touch_file(self.complete_artifact_path(log_key))  # as Dagster's: the capture is complete
