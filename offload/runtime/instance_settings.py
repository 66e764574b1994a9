"""The instance's settings parsed once in the fork server, not once per run in every worker.

A run worker builds its Dagster instance from the reference it is sent (``InstanceRef``): each configurable
part (storages, launcher, run coordinator, compute logs...) carries its settings as YAML text, parsed anew
by Dagster's pure-Python YAML loader every time an instance is made. In a forked worker that is ~7 parses
a run, about 30 ms of CPU, most of it the run coordinator's settings with every concurrency rule
(profiled in process, a third of what is left of a trivial run's worker after its engines are kept:
offload/runtime/sqlite_engines.py). :func:`install` memoizes the parse by its text (each caller gets its
own copy), and :func:`warm` fills the memo from a reference: the fork server does both before forking, so
every worker it forks finds the settings already parsed.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from typing import Any

from dagster._core.instance.ref import InstanceRef
from dagster._serdes import ConfigurableClassData

_parsed: dict[str, Mapping[str, Any]] = {}
_lock = threading.Lock()
_installed: list[bool] = []


def install() -> None:
    """Memoize ``ConfigurableClassData.config_dict`` in this process (and the processes it forks)."""
    with _lock:
        if _installed:
            return
        _installed.append(True)
        parse = ConfigurableClassData.config_dict.fget  # type: ignore[attr-defined]

    def config_dict(self: ConfigurableClassData) -> Mapping[str, Any]:
        parsed = _parsed.get(self.config_yaml)
        if parsed is None:
            parsed = parse(self)
            _parsed[self.config_yaml] = parsed
        return copy.deepcopy(parsed)  # callers may change what they get; the memo stays as parsed

    ConfigurableClassData.config_dict = property(config_dict)  # type: ignore[assignment,method-assign]


def warm(ref: InstanceRef | None) -> None:
    """Parse every configurable part of ``ref`` into the memo."""
    for value in ref or ():
        if isinstance(value, ConfigurableClassData):
            _ = value.config_dict
