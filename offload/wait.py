"""Durable waits inside a step, Trigger.dev's ``wait.for`` / ``wait.until`` / ``wait.forToken``.

    from offload import wait

    @dg.op
    def follow_up(context, signup: dict) -> dict:
        wait.sleep(context, timedelta(days=1))         # the run's worker exits; the run resumes tomorrow
        ...

    @dg.op
    def await_approval(context, token_id: str) -> dict:
        result = wait.for_token(context, token_id, timeout=timedelta(days=7))
        if result.timed_out: ...
        return result.data                              # what complete_token / the token URL's POST sent

A wait longer than ``IN_PROCESS_SECONDS`` frees everything: the run's worker process exits, the run holds
no concurrency slot and shows ``WAITING`` (with until-when or which token) to the client, in ``list()`` and
as the tag ``offload/suspended`` / ``offload/resumes`` in the Dagster UI. When it is over, the run resumes
as the same run (same id for the client); it queues again under its concurrency limits. Shorter waits sleep
in the worker. The wait is a step boundary: on resume, finished steps are not run again, and the waiting
step starts again from its top, every wait it already passed returning at once (offload/runtime/waits.py):
code before a wait in the same step runs again, so put side effects in an earlier step.

Tokens (``create_token``, ``complete_token``) work anywhere the Dagster instance is reachable: in a step,
in the app (``DAGSTER_HOME`` set), in the gateway; over HTTP, ``POST`` the token's ``url`` on the webhook
gateway (the secret is in the URL). Completing twice is a no-op that succeeds; the first data wins.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import dagster as dg

from offload.runtime import waits, waitstore

IN_PROCESS_SECONDS = 5.0  # waits up to this long sleep in the worker: a suspend and resume costs ~1-2 s
DEFAULT_TOKEN_TIMEOUT = timedelta(days=7)
GATEWAY_URL_VARIABLE = "OFFLOAD_GATEWAY_URL"
DEFAULT_GATEWAY_URL = "http://127.0.0.1:3001"


@dataclass(frozen=True)
class Token:
    """A token to wait for. ``url``: POST JSON to it (on the webhook gateway) to complete the token."""

    id: str
    url: str

    def __getitem__(self, name: str) -> str:  # token["id"], token["url"], as Trigger.dev's object
        return str(getattr(self, name))


@dataclass(frozen=True)
class TokenResult:
    """What ``for_token`` returns: ``ok`` and the completion ``data``, or ``timed_out``."""

    ok: bool
    data: Any = None
    timed_out: bool = False


def _seconds(duration: timedelta | float, field: str) -> float:
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
    if seconds != seconds or seconds < 0:  # NaN or negative
        raise ValueError(f"{field}: {duration!r} must be a non-negative duration")
    return seconds


def sleep(context: Any, duration: timedelta | float) -> None:
    """Wait ``duration`` (a ``timedelta`` or seconds). Trigger.dev's ``wait.for``."""
    until(context, time.time() + _seconds(duration, "duration"))


def until(context: Any, when: datetime | float) -> None:
    """Wait until ``when`` (an aware ``datetime``, or a Unix timestamp)."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ValueError(f"when: {when!r} must be timezone-aware (e.g. datetime.now(UTC))")
        due = when.timestamp()
    else:
        due = float(when)
    wait_id = waits.next_wait_id(context)
    done, _ = waits.passed(context, wait_id)
    if done:
        return
    row = waitstore.for_instance(context.instance).get_wait(wait_id)
    if row is not None and row.due_at is not None:
        due = row.due_at  # re-entered before it was resumed (a manual re-execution): the first due time holds
    remaining = due - time.time()
    if remaining <= IN_PROCESS_SECONDS:
        time.sleep(max(0.0, remaining))
        return
    waits.suspend(context, wait_id, "sleep", waits.until_text(due), due_at=due)


def for_token(context: Any, token: Token | str, *, timeout: timedelta | float | None = None) -> TokenResult:
    """Wait until ``token`` is completed (its data) or times out (its own timeout, or ``timeout`` if
    sooner): ``TokenResult(ok, data, timed_out)``."""
    token_id = token.id if isinstance(token, Token) else str(token)
    wait_id = waits.next_wait_id(context)
    done, result = waits.passed(context, wait_id)
    if done:
        return TokenResult(bool(result["ok"]), result.get("data"), bool(result["timed_out"]))
    store = waitstore.for_instance(context.instance)
    row = store.get_token(token_id)
    if row is None:
        raise dg.Failure(description=f"token: no token {token_id!r}", allow_retries=False)
    if row.state != waitstore.TOKEN_WAITING:  # completed (or timed out) before the step got here
        return TokenResult(
            row.state == waitstore.TOKEN_COMPLETED, row.data, row.state != waitstore.TOKEN_COMPLETED
        )
    due = row.expires_at
    if timeout is not None:
        due = min(due, time.time() + _seconds(timeout, "timeout"))
    existing = store.get_wait(wait_id)
    if existing is not None and existing.due_at is not None:
        due = existing.due_at
    waits.suspend(context, wait_id, "token", f"token {token_id}", due_at=due, token_id=token_id)
    raise AssertionError("unreachable")  # suspend raises


def for_runs(context: Any, run_ids: Sequence[str], is_final: Any) -> None:
    """Suspend until every run in ``run_ids`` is final (offload/client/children.py); returns at once if they
    are. ``is_final(run_id) -> bool`` says whether one is, from the caller's view."""
    wait_id = waits.next_wait_id(context)
    done, _ = waits.passed(context, wait_id)
    if done or all(is_final(run_id) for run_id in run_ids):
        return
    waits.suspend(context, wait_id, "runs", f"{len(run_ids)} child run(s)", child_runs=list(run_ids))


# -- tokens ------------------------------------------------------------------------------------------------


def gateway_url() -> str:
    return os.environ.get(GATEWAY_URL_VARIABLE, DEFAULT_GATEWAY_URL).rstrip("/")


def token_url(row: waitstore.TokenRow) -> str:
    return f"{gateway_url()}/tokens/{row.id}/{row.secret}"


def _instance(context: Any, instance: dg.DagsterInstance | None) -> dg.DagsterInstance:
    if instance is not None:
        return instance
    if context is not None:
        return context.instance
    return dg.DagsterInstance.get()


def create_token(
    context: Any = None,
    *,
    timeout: timedelta | float = DEFAULT_TOKEN_TIMEOUT,
    tags: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
    instance: dg.DagsterInstance | None = None,
) -> Token:
    """A token to wait for, completed by ``complete_token`` or a POST to its ``url``; it times out after
    ``timeout``. In a step (``context`` given) the default idempotency key is the step's, so the resumed
    step gets the same token back."""
    seconds = _seconds(timeout, "timeout")
    if seconds <= 0:
        raise ValueError(f"timeout: {timeout!r} must be positive")
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"tags: {key!r}: keys and values must be strings")
    if idempotency_key is None and context is not None:
        idempotency_key = f"token/{waits.next_wait_id(context)}"
    store = waitstore.for_instance(_instance(context, instance))
    row = store.create_token(seconds, tags, idempotency_key)
    return Token(row.id, token_url(row))


def complete_token(token_id: str, data: Any = None, *, instance: dg.DagsterInstance | None = None) -> bool:
    """Complete the token with ``data`` (JSON); True if this call completed it, False if it was completed
    or timed out before (a no-op). ``KeyError`` if there is no such token."""
    store = waitstore.for_instance(_instance(None, instance))
    if store.get_token(token_id) is None:
        raise KeyError(f"token: no token {token_id!r}")
    return store.complete_token(token_id, data)
