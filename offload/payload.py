"""Payloads are run config: validated before any step runs, reported one line per bad field.

A job declares its payload as a ``dg.Config`` class and maps it onto its steps with ``payload_mapping``, so
``dagster job execute -j video_pipeline -c payload.yaml`` reads like ``trigger(payload)``. Dagster reports
a failed mapping as a long traceback; ``payload_errors`` turns either kind of failure (Dagster's own type
checks, or the model's rules) into ``field: value rule`` lines, and ``install_cli_error_hook`` makes the
CLI print just those lines. ``check_email`` and ``check_mailbox`` are the one rule for email addresses in
any payload.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import dagster as dg
import email_validator
from pydantic import ValidationError

from offload.errors import ConfigurationError, PayloadError
from offload.payload_rules import (
    MAX_PAYLOAD_BYTES,
    SECRET_FIELD,
    config_error_line,
    payload_problems,
    run_secret_problems,
    secret_problems,
    tag_problem,
)

__all__ = [
    "EMAIL_RULE",
    "MAX_PAYLOAD_BYTES",
    "MAX_SHOWN_CHARS",
    "MAX_URL_LENGTH",
    "SECRET_FIELD",
    "check_email",
    "check_mailbox",
    "check_url",
    "config_error_line",
    "configuration_error",
    "install_cli_error_hook",
    "payload_errors",
    "payload_mapping",
    "payload_problems",
    "run_secret_problems",
    "secret_problems",
    "tag_problem",
]

P = TypeVar("P", bound=dg.Config)
MAX_URL_LENGTH = 2048
MAX_SHOWN_CHARS = 120


def check_url(value: str, schemes: Sequence[str]) -> str:
    """``value`` if it is a URL with one of ``schemes``, else ``ValueError`` saying the rule it breaks.

    A rule for field validators: a network URL must name a host, a ``file`` URL a path. Whether the host
    may be reached is decided when it is fetched (``offload.net.address_policy``), not here.
    """
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"must be at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in schemes:
        raise ValueError(f"must be a URL with scheme {', '.join(schemes)}")
    if parts.scheme == "file":
        if not parts.path:
            raise ValueError("must name a path after file://")
    elif not host:
        raise ValueError(f"must name a host after {parts.scheme}://")
    return value


EMAIL_RULE = "must be an email address like name@example.com"
# An optional display name without the characters that would make it a list or a second header line.
_MAILBOX = re.compile(r"(?:[^<>,;\"\r\n]*<(?P<address>[^<>\s]+)>|(?P<bare>[^<>\s]+))")


def check_email(value: str) -> str:
    """``value`` if it is one email address (syntax only, no DNS lookup), else ``ValueError``."""
    try:
        email_validator.validate_email(value, check_deliverability=False)
    except email_validator.EmailNotValidError as error:
        raise ValueError(f"{EMAIL_RULE} ({str(error).rstrip('.')})") from None
    return value


def check_mailbox(value: str) -> str:
    """``value`` if it is one address with an optional display name (``Acme <noreply@acme.com>``)."""
    match = _MAILBOX.fullmatch(value)
    if match is None:
        raise ValueError(f"{EMAIL_RULE} or 'Name <name@example.com>' (one address, one line)")
    check_email(match["address"] or match["bare"])
    return value


# --- secrets: never in a run's config or tags (both are shown in the UI): offload/payload_rules.py -------


def _validation_lines(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "payload"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{field}{_shown(item.get('input'))}: {message}")
    return lines


def _shown(value: Any) -> str:
    """The bad value as the line shows it: whole if short, a long list by its length, else cut."""
    if isinstance(value, dict):
        return ""
    text = repr(value)
    if len(text) <= MAX_SHOWN_CHARS:
        return f" = {text}"
    if isinstance(value, list):
        return f" = [{len(value)} items]"
    return f" = {text[: MAX_SHOWN_CHARS - 3]}..."


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


def configuration_error(error: BaseException) -> str | None:
    """The one line of a ``ConfigurationError`` that ``error`` is, or was caused by, else None."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ConfigurationError):
            return str(seen)
        user_error = getattr(seen, "user_exception", None)
        seen = user_error if isinstance(user_error, BaseException) else seen.__cause__
    return None


def install_cli_error_hook() -> None:
    """Print payload errors as their lines, and a missing setting as its one line (not a traceback), when
    the CLI dies of one."""
    previous = sys.excepthook
    if getattr(previous, "offload_payload_hook", False):
        return

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        setting = configuration_error(error)
        if setting is not None:
            print(f"configuration error: {setting}", file=sys.stderr)
            return
        lines = payload_errors(error)
        if lines is None:
            previous(kind, error, tb)
            return
        print("invalid payload:", file=sys.stderr)
        for line in lines:
            print(f"  {line}", file=sys.stderr)

    hook.offload_payload_hook = True  # type: ignore[attr-defined]
    sys.excepthook = hook
