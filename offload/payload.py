"""Payloads are run config: validated before any step runs, reported one line per bad field.

A job declares its payload as a ``dg.Config`` class and maps it onto its steps with ``payload_mapping``, so
``dagster job execute -j video_pipeline -c payload.yaml`` reads like ``trigger(payload)``. Dagster reports
a failed mapping as a long traceback; ``payload_errors`` turns either kind of failure (Dagster's own type
checks, or the model's rules) into ``field: value rule`` lines, and ``install_cli_error_hook`` makes the
CLI print just those lines.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import dagster as dg
from pydantic import ValidationError

from offload.errors import PayloadError

P = TypeVar("P", bound=dg.Config)

EMAIL = re.compile(r"^[^@\s<>,;]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
EMAIL_RULE = "must be an email address like name@example.com"


def check_email(value: str) -> str:
    """A field validator for email addresses (any job whose payload names a recipient)."""
    if len(value) > 254 or not EMAIL.fullmatch(value):
        raise ValueError(EMAIL_RULE)
    return value


def config_error_line(message: str) -> str:
    """One of Dagster's config type errors (missing field, wrong type) as one line."""
    return message.replace("\n", " ").strip()


def _validation_lines(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "payload"
        message = item["msg"].removeprefix("Value error, ")
        value = item.get("input")
        shown = "" if isinstance(value, dict) else f" = {value!r}"
        lines.append(f"{field}{shown}: {message}")
    return lines


def payload_errors(error: BaseException) -> list[str] | None:
    """One line per bad field if ``error`` (or what caused it) is a payload error, else None."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, PayloadError):
            return seen.lines
        if isinstance(seen, ValidationError):
            return _validation_lines(seen)
        if isinstance(seen, dg.DagsterInvalidConfigError):
            return [config_error_line(e.message) for e in seen.errors] or [str(seen)]
        user_error = getattr(seen, "user_exception", None)
        seen = user_error if isinstance(user_error, BaseException) else seen.__cause__
    return None


def payload_mapping(model: type[P], to_run_config: Callable[[P], dict[str, Any]]) -> dg.ConfigMapping:
    """A job-level config mapping whose schema is ``model``: the run config is the payload itself."""

    def config_fn(payload: dict[str, Any]) -> dict[str, Any]:
        try:
            checked = model(**payload)
        except ValidationError as error:
            # Raised as its lines: they travel intact to the CLI and, through the webserver, to the client.
            raise PayloadError(_validation_lines(error)) from error
        return to_run_config(checked)

    return dg.ConfigMapping(config_fn=config_fn, config_schema=model.to_config_schema())


def install_cli_error_hook() -> None:
    """Print payload errors as their lines (not a traceback) when the CLI dies of one."""
    previous = sys.excepthook
    if getattr(previous, "offload_payload_hook", False):
        return

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        lines = payload_errors(error)
        if lines is None:
            previous(kind, error, tb)
            return
        print("invalid payload:", file=sys.stderr)
        for line in lines:
            print(f"  {line}", file=sys.stderr)

    hook.offload_payload_hook = True  # type: ignore[attr-defined]
    sys.excepthook = hook
