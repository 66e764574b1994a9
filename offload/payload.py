"""Payloads are run config: validated before any step runs, reported one line per bad field.

A job declares its payload as a ``dg.Config`` class and maps it onto its steps with ``payload_mapping``, so
``dagster job execute -j video_pipeline -c payload.yaml`` reads like ``trigger(payload)``. Dagster reports
a failed mapping as a long traceback; ``payload_errors`` turns either kind of failure (Dagster's own type
checks, or the model's rules) into ``field: value rule`` lines, and ``install_cli_error_hook`` makes the
CLI print just those lines. ``check_email`` and ``check_mailbox`` are the one rule for email addresses in
any payload.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import dagster as dg
import email_validator
from pydantic import ValidationError

from offload.errors import ConfigurationError, PayloadError
from offload.log import holds_secret

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


# --- secrets: never in a run's config or tags (both are shown in the UI) ---------------------------------

MAX_PAYLOAD_BYTES = 3 * 1024 * 1024  # Trigger.dev's limit; the run config lives in the run storage and the UI
# Payload field names that say "secret". Narrower than offload.log's names for environment variables:
# payloads legitimately carry storage keys and idempotency keys.
SECRET_FIELD = re.compile(
    r"(secret|token|password|passwd|api[_-]?key|private[_-]?key|access[_-]?key|credentials?)$", re.I
)


def payload_problems(payload: Any) -> list[str]:
    """What the client refuses to send as run config, one line each (empty: fine to send): not a JSON
    object, too large, or ``secret_problems``."""
    if not isinstance(payload, Mapping):
        return ["payload: must be a JSON object (field names to values)"]
    try:
        size = len(json.dumps(payload).encode())
    except (TypeError, ValueError) as error:
        return [f"payload: must be JSON-serializable ({error})"]
    if size > MAX_PAYLOAD_BYTES:
        return [f"payload: {size:,} bytes is over the {MAX_PAYLOAD_BYTES:,}-byte limit; put large inputs in "
                "storage and pass their key"]  # fmt: skip
    return secret_problems(payload)


def secret_problems(value: Any, path: str = "", allow_env: bool = False) -> list[str]:
    """Secrets in a run's config, one line per field: a field named like a secret, a string holding a
    secret of this process's environment (in any encoding ``offload.log`` knows) or a password in a URL,
    and (unless ``allow_env``) ``{env: NAME}``, which would read the server's environment. The client
    checks a payload with these rules before sending it; offload's run coordinator checks every run with
    them where it is created (GraphQL, the Launchpad, sensors), where the server's secrets are known."""
    problems: list[str] = []

    def walk(path: str, value: Any) -> None:
        if isinstance(value, Mapping):
            if set(value) == {"env"} and isinstance(value["env"], str):
                if not allow_env:
                    problems.append(
                        f"{path}: {{env: ...}} is not allowed: a payload never reads the server's environment"
                    )
                return
            for name, item in value.items():
                child = f"{path}.{name}" if path else str(name)
                if SECRET_FIELD.search(str(name)):
                    problems.append(f"{child}: looks like a secret; give secrets to the code location as "
                                    "environment variables (dg.EnvVar), never in a payload")  # fmt: skip
                else:
                    walk(child, item)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(f"{path}[{index}]", item)
        elif isinstance(value, str) and holds_secret(value):
            problems.append(
                f"{path or 'payload'}: holds a secret of this app's environment or a password in a URL; "
                "secrets never go in a payload (the run config is shown in the UI)"
            )

    walk(path, value)
    return problems


def tag_problem(key: str, value: str) -> str | None:
    """Why the run tag ``key: value`` may not be set (one line), or None."""
    if holds_secret(value):
        return f"tags: {key!r} holds a secret; tags are shown in the UI"
    return None


def run_secret_problems(run_config: Mapping[str, Any], tags: Mapping[str, str]) -> list[str]:
    """``secret_problems`` and ``tag_problem`` for a run about to start. Only the top-level ``resources``
    section may read the server's environment (``{env: NAME}``): that is how Dagster binds a resource's
    secret without showing it."""
    config = dict(run_config or {})
    resources = config.pop("resources", None)
    problems = secret_problems(config)
    if resources is not None:
        problems += secret_problems(resources, "resources", allow_env=True)
    problems += [line for key, value in tags.items() if (line := tag_problem(key, value)) is not None]
    return problems


def config_error_line(message: str) -> str:
    """One of Dagster's config type errors (missing field, wrong type) as one line."""
    return message.replace("\n", " ").strip()


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
