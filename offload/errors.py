"""Error classes that decide what happens after a failure.

A ``PayloadError`` is the caller's mistake: it is reported as one line per bad field and no run starts.
``abort`` builds the non-retryable failure (Trigger.dev's ``AbortTaskRunError``): the step fails at once,
whatever its retry policy says. A ``ConfigurationError`` is the deployment's mistake (a variable not set):
resources raise it while they are set up, so the run fails before its first step, with one line naming
the variable.
"""

from __future__ import annotations

import dagster as dg


class PayloadError(ValueError):
    """One or more payload fields break their rule; ``lines`` holds one readable line per field."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("; ".join(lines))


class ConfigurationError(RuntimeError):
    """A setting the run needs is missing or invalid; the message is one line naming the variable to set."""


class FetchError(RuntimeError):
    """A source could not be fetched. ``retryable`` says whether trying again could help."""

    def __init__(self, message: str, *, retryable: bool = False):
        self.retryable = retryable
        super().__init__(message)


def abort(message: str) -> dg.Failure:
    """A failure no retry policy may retry: bad input that will be just as bad next time."""
    return dg.Failure(description=message, allow_retries=False)
