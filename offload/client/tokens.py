"""Public access tokens: what an app hands its user's browser so that it can watch some runs live on the
webhook gateway (``GET /realtime/...``, offload/webhooks/realtime.py), and nothing else.

    token = client.create_public_token(runs=[handle.id], expires="15m")
    token = client.create_public_token(tags={"user_id": "u_42"}, expires="1h")   # that user's runs

A token is a signed (HMAC-SHA256 by itsdangerous), read-only grant: the runs it names, or the runs that
carry one of its tags, until it expires. The app and the gateway share the signing secret
``OFFLOAD_REALTIME_SECRET`` (at least 32 characters); the browser cannot change a token without breaking its
signature. A token names no secret, but it is a credential: the gateway never logs it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from offload.client.idempotency import ttl_seconds
from offload.exceptions import ConfigurationError

if TYPE_CHECKING:
    import itsdangerous

SECRET_VARIABLE = "OFFLOAD_REALTIME_SECRET"
MIN_SECRET_LENGTH = 32
MAX_EXPIRES = 7 * 86400  # a week: tokens live in browsers; mint a new one rather than a long one
MAX_RUNS = 100
_SALT = "offload.realtime.v1"


class InvalidTokenError(Exception):
    """The token is missing, expired, tampered with, or signed with another secret."""


@dataclass(frozen=True)
class Grant:
    """What a valid token allows: these runs, and the runs tagged with any of these tags."""

    runs: frozenset[str]
    tags: tuple[tuple[str, str], ...]
    expires_at: float

    def allows(self, run_id: str, run_tags: Mapping[str, str]) -> bool:
        return run_id in self.runs or any(run_tags.get(k) == v for k, v in self.tags)


def signing_secret(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    secret = env.get(SECRET_VARIABLE, "")
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigurationError(
            f"{SECRET_VARIABLE}: must be set to a random string of at least {MIN_SECRET_LENGTH} characters "
            "(the same on the app and the gateway)"
        )
    return secret


def _serializer(secret: str) -> itsdangerous.URLSafeSerializer:
    import itsdangerous  # on first use: an app that mints no token never loads it

    return itsdangerous.URLSafeSerializer(secret, salt=_SALT)


def create_public_token(
    runs: Sequence[str] | None = None,
    tags: Mapping[str, str] | None = None,
    expires: float | timedelta | str = "15m",
    *,
    secret: str | None = None,
) -> str:
    """A token for the browser that reads ``runs`` (ids) and/or the runs tagged with any of ``tags``, for
    ``expires`` (seconds, a timedelta, or ``"15m"``, ``"1h"``, at most 7 days)."""
    run_ids = list(runs or [])
    if not run_ids and not tags:
        raise ValueError("create_public_token: give runs=[...] or tags={...}; a token must be scoped")
    if len(run_ids) > MAX_RUNS or not all(isinstance(r, str) and 0 < len(r) <= 64 for r in run_ids):
        raise ValueError(f"runs: at most {MAX_RUNS} run ids, each a string of 1-64 characters")
    pairs = sorted((tags or {}).items())
    if not all(isinstance(k, str) and isinstance(v, str) and k and v for k, v in pairs):
        raise ValueError("tags: keys and values must be non-empty strings")
    try:
        seconds = ttl_seconds(expires)
    except ValueError:
        raise ValueError(
            f"expires: {expires!r} must be positive seconds or like '30s', '15m', '1h'"
        ) from None
    if seconds > MAX_EXPIRES:
        raise ValueError(f"expires: {expires!r} is over the {MAX_EXPIRES // 86400}-day limit")
    claims = {"r": run_ids, "t": [list(pair) for pair in pairs], "e": round(time.time() + seconds, 3)}
    return str(_serializer(secret or signing_secret()).dumps(claims))


def verify_public_token(token: str | None, *, secret: str | None = None, now: float | None = None) -> Grant:
    """The grant a token carries; ``InvalidTokenError`` if it is missing, tampered with or expired."""
    if not token:
        raise InvalidTokenError("token: missing")
    from itsdangerous import BadData

    try:
        claims = _serializer(secret or signing_secret()).loads(token)
    except BadData:
        raise InvalidTokenError("token: bad signature") from None
    try:
        grant = Grant(
            frozenset(claims["r"]), tuple((str(k), str(v)) for k, v in claims["t"]), float(claims["e"])
        )
    except (KeyError, TypeError, ValueError):
        raise InvalidTokenError("token: malformed") from None
    if (time.time() if now is None else now) >= grant.expires_at:
        raise InvalidTokenError("token: expired")
    return grant
