"""The error classes that need no Dagster: the caller's and the deployment's mistakes, and what the client
raises. ``offload.errors`` re-exports them with the step-side errors; the thin client (``offload.client``)
imports them from here so that it never imports Dagster."""

from __future__ import annotations


class PayloadError(ValueError):
    """One or more payload fields break their rule; ``lines`` holds one readable line per field."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        # One line each (a value is shown by its repr, so it never breaks a line): the webserver passes the
        # message on as text, and offload.client splits it back into these lines.
        super().__init__("\n".join(lines))


class ConfigurationError(RuntimeError):
    """A setting the run needs is missing or invalid; the message is one line naming the variable to set."""


CONFIGURATION_ERROR_TAG = "offload/configuration_error"
"""Run tag: the one-line reason a resource could not be set up (``ConfigurationError``), on a failed run."""


class ClientError(Exception):
    """Base of the errors ``offload.client`` raises; each says what went wrong and what to do in one line."""


class WebserverUnreachableError(ClientError, ConnectionError):
    """The Dagster webserver did not answer (not started, wrong ``OFFLOAD_DAGSTER_URL``, or too slow)."""


class AuthenticationError(ClientError, PermissionError):
    """The proxy in front of the webserver refused the request (HTTP 401 or 403): credentials missing or
    wrong (``OFFLOAD_API_TOKEN``, or ``OFFLOAD_API_USER`` and ``OFFLOAD_API_PASSWORD``)."""


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
