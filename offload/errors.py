"""Error classes that decide what happens after a failure, and the one classifier that reads them.

A ``PayloadError`` is the caller's mistake: it is reported as one line per bad field and no run starts.
``AbortTaskRunError`` (Trigger.dev's name) is the one way to fail a step for good: it is a
``dg.Failure(allow_retries=False)``, so neither offload's retry policy nor a Dagster ``RetryPolicy`` tries
the step again. ``is_retryable`` is the classifier every retry decision goes through (``offload.retry``
for steps, ``offload.net.http`` for requests). A ``ConfigurationError`` is the deployment's mistake (a
variable not set): resources raise it while they are set up, so the run fails before its first step, with
one line naming the variable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import dagster as dg
import httpx

from offload.exceptions import (
    CONFIGURATION_ERROR_TAG,
    AuthenticationError,
    ClientError,
    ConfigurationError,
    GraphQLError,
    InvalidPayloadError,
    PayloadError,
    RunNotFoundError,
    RunTimeoutError,
    UnknownJobError,
    WebserverUnreachableError,
)
from offload.redaction import redact

__all__ = [
    "CONFIGURATION_ERROR_TAG",
    "RETRYABLE_STATUSES",
    "AbortTaskRunError",
    "AuthenticationError",
    "ClientError",
    "ConfigurationError",
    "FetchError",
    "GraphQLError",
    "InvalidPayloadError",
    "PayloadError",
    "RunNotFoundError",
    "RunTimeoutError",
    "UnknownJobError",
    "WebserverUnreachableError",
    "configuration_checked",
    "is_retryable",
    "retryable_status",
    "upstream_error_kind",
]

RETRYABLE_STATUSES = frozenset({408, 409, 429})
"""HTTP statuses worth another try besides 5xx: request timeout, conflict, too many requests."""


class AbortTaskRunError(dg.Failure):
    """A failure no retry may retry: input that will be just as bad next time (a 404, a file that is not
    a video, a URL the SSRF guard refuses). The step fails at once and the run fails with ``message``."""

    def __init__(self, message: str, metadata: Mapping[str, Any] | None = None):
        super().__init__(description=message, metadata=metadata, allow_retries=False)


_MAX_RETRIES_TAG = "dagster/max_retries"


@contextmanager
def configuration_checked(context: dg.InitResourceContext) -> Iterator[None]:
    """Set a resource up inside this; a ``ConfigurationError`` then fails the run for good, as itself.

    Dagster reports a resource that fails to set up as a run exception (``RUN_EXCEPTION``, shown as
    ``DagsterResourceFunctionError``), the reason its run retries retry: a missing key would be tried three
    times and look like a crash. Before the error reaches Dagster, the run is tagged
    ``dagster/max_retries=0`` (Dagster decides on retries when it records the failure, from the run's tags)
    and ``offload/configuration_error`` with the reason, which offload.client.runs maps to FAILED with that
    reason
    as the run's error, and the ops alert quotes.
    """
    try:
        yield
    except ConfigurationError as error:
        instance, run_id = context.instance, context.run_id
        if instance is not None and run_id is not None:
            reason = redact(
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            instance.add_run_tags(run_id, {_MAX_RETRIES_TAG: "0", CONFIGURATION_ERROR_TAG: reason})
        raise


def require_settings(resource: object, variables: Mapping[str, str]) -> None:
    """Raise ``ConfigurationError`` ("DATABASE_URL is not set") for the first of ``resource``'s settings,
    given as field -> the variable that sets it, that is empty.

    The production resource set binds such a setting to ``dg.EnvVar`` only when the variable is set, and to
    an empty value otherwise (``resources.required_env``): Dagster fails an unset ``EnvVar`` while it resolves
    the run's config, before any resource code runs, as a crash its run retries retry. Checked in the
    resource's ``setup_for_execution`` inside :func:`configuration_checked`, an unset variable instead
    fails the run for good with this one line, as a bad value does.
    """
    for field, variable in variables.items():
        value = getattr(resource, field, None)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ConfigurationError(f"{variable} is not set")


class FetchError(RuntimeError):
    """A source could not be fetched. ``retryable`` says whether trying again could help; ``status`` is the
    HTTP status when there was one; ``retry_after`` the seconds a rate-limited server asked to wait."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
    ):
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        super().__init__(message)


_ERROR_KIND = re.compile(r"[A-Za-z][\w.-]{0,63}")


def upstream_error_kind(kind: object, fallback: str) -> str:
    """The error type an upstream API named (``invalid_request_error``, ``validation_error``), if it is a
    short identifier, else ``fallback``. Only this and the HTTP status of an upstream failure are logged:
    the server's own text is not ours to vouch for (a hostile endpoint echoed the API key in it, encoded)."""
    text = str(kind) if kind is not None else ""
    return text if _ERROR_KIND.fullmatch(text) else fallback


def retryable_status(status: int) -> bool:
    """408, 409, 429 and every 5xx are worth another try; any other status will answer the same."""
    return status in RETRYABLE_STATUSES or 500 <= status <= 599


def _status_of(error: BaseException) -> int | None:
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code
    for name in ("status_code", "status"):  # openai's APIStatusError, our EmailSendError, ...
        value = getattr(error, name, None)
        if isinstance(value, int) and 100 <= value <= 599:
            return value
    return None


def is_retryable(error: BaseException) -> bool:
    """Whether another attempt could succeed where this one failed with ``error``.

    False for errors known to be permanent: ``AbortTaskRunError`` and any ``dg.Failure(allow_retries=False)``,
    payload errors, configuration errors (a setting stays missing until someone sets it), Dagster's own usage
    errors, errors that say so through a ``retryable`` flag (``FetchError``, ``EmailSendError``), and HTTP
    statuses other than 408, 409, 429 and 5xx. True for the transient ones (connection reset or refused,
    timeouts, those statuses) and, as in Trigger.dev, for any other exception: an unknown error gets the
    policy's attempts rather than none.
    """
    if isinstance(error, dg.Failure):
        return error.allow_retries is not False
    if isinstance(error, PayloadError | ConfigurationError | dg.DagsterError):
        return False
    flag = getattr(error, "retryable", None)
    if isinstance(flag, bool):
        return flag
    status = _status_of(error)
    if status is not None:
        return retryable_status(status)
    # Connection reset/refused (ConnectionError), timeouts (TimeoutError, httpx.TimeoutException) and
    # every other exception: retried.
    return True
