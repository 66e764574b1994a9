"""Error classes that decide what happens after a failure.

A ``PayloadError`` is the caller's mistake: it is reported as one line per bad field and no run starts.
``abort`` builds the non-retryable failure (Trigger.dev's ``AbortTaskRunError``): the step fails at once,
whatever its retry policy says.
"""

from __future__ import annotations

import dagster as dg


class PayloadError(ValueError):
    """One or more payload fields break their rule; ``lines`` holds one readable line per field."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        # One line each (a value is shown by its repr, so it never breaks a line): the webserver passes the
        # message on as text, and offload.client splits it back into these lines.
        super().__init__("\n".join(lines))


class FetchError(RuntimeError):
    """A source could not be fetched. ``retryable`` says whether trying again could help."""

    def __init__(self, message: str, *, retryable: bool = False):
        self.retryable = retryable
        super().__init__(message)


def abort(message: str) -> dg.Failure:
    """A failure no retry policy may retry: bad input that will be just as bad next time."""
    return dg.Failure(description=message, allow_retries=False)


class ClientError(Exception):
    """Base of the errors ``offload.client`` raises; each says what went wrong and what to do in one line."""


class WebserverUnreachableError(ClientError, ConnectionError):
    """The Dagster webserver did not answer (not started, wrong ``OFFLOAD_DAGSTER_URL``, or too slow)."""


class UnknownJobError(ClientError, LookupError):
    """No job of that name in the code location the webserver serves."""


class InvalidPayloadError(PayloadError, ClientError):
    """The payload breaks its job's rules; ``lines`` are the CLI's, one per bad field. No run started."""

    def __init__(self, job: str, lines: list[str]):
        self.job = job
        super().__init__(lines)

    def __str__(self) -> str:
        return f"invalid payload for {self.job}:\n" + "\n".join(f"  {line}" for line in self.lines)


class RunNotFoundError(ClientError, LookupError):
    """No run with that id."""


class RunTimeoutError(ClientError, TimeoutError):
    """A run did not finish within the time the caller was ready to wait (it goes on running)."""


class GraphQLError(ClientError):
    """The webserver answered with an error the client does not expect (a bug or an incompatible version)."""
