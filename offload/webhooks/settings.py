"""The gateway's settings, all from environment variables, checked once at start with one-line errors.

The abuse limits (offload/webhooks/abuse.py) have defaults fit for the internet; docs/security.md lists them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import limits

from offload.errors import ConfigurationError
from offload.webhooks.abuse import parse_rate, uvicorn_options
from offload.webhooks.inbox import default_url
from offload.webhooks.launch import DEFAULT_CLAIM_TIMEOUT
from offload.webhooks.providers import PROVIDERS

DEFAULT_MAX_BYTES = 1024 * 1024
DEFAULT_RATE_LIMIT = "100/second"  # per source: far above any provider's delivery rate from one address
DEFAULT_READ_TIMEOUT = 15.0  # seconds for a whole request to arrive: 1 MiB needs 70 KB/s
DEFAULT_MAX_HEADER_BYTES = 16 * 1024  # h11's own default; providers send under 2 KiB
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_KEEP_ALIVE = 5.0  # uvicorn's default
DEFAULT_REALTIME_INTERVAL = 0.1  # seconds between the realtime streams' reads of the run storage
MIN_REALTIME_INTERVAL = 0.05  # below it the poll would be most of the gateway's work
LAUNCH_MODES = ("immediate", "sensor")


def _number(environ: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}: must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{name}: must be at least {minimum:g}, got {raw!r}")
    return value


@dataclass(frozen=True)
class GatewaySettings:
    inbox_url: str
    secrets: dict[str, str] = field(repr=False)  # provider -> signing secret; a provider missing refuses all
    max_bytes: int = DEFAULT_MAX_BYTES
    launch: str = "immediate"  # "sensor": only store; the webhook_inbox sensor makes the runs
    claim_timeout: float = DEFAULT_CLAIM_TIMEOUT
    rate_limit: limits.RateLimitItem | None = field(default_factory=lambda: limits.parse(DEFAULT_RATE_LIMIT))
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    keep_alive: float = DEFAULT_KEEP_ALIVE
    realtime_interval: float = DEFAULT_REALTIME_INTERVAL

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewaySettings:
        env = os.environ if environ is None else environ
        secrets = {
            name: env[provider.secret_variable].strip()
            for name, provider in PROVIDERS.items()
            if env.get(provider.secret_variable, "").strip()
        }
        launch = env.get("OFFLOAD_WEBHOOK_LAUNCH", "immediate").strip().lower() or "immediate"
        if launch not in LAUNCH_MODES:
            raise ConfigurationError(
                f"OFFLOAD_WEBHOOK_LAUNCH: must be one of {', '.join(LAUNCH_MODES)}, got {launch!r}"
            )
        try:
            rate_limit = parse_rate(env.get("OFFLOAD_WEBHOOK_RATE_LIMIT", "").strip() or DEFAULT_RATE_LIMIT)
        except ValueError as error:
            raise ConfigurationError(f"OFFLOAD_WEBHOOK_RATE_LIMIT: {error}") from None
        return cls(
            inbox_url=default_url(env),
            secrets=secrets,
            max_bytes=int(_number(env, "OFFLOAD_WEBHOOK_MAX_BYTES", DEFAULT_MAX_BYTES, 1)),
            launch=launch,
            claim_timeout=_number(env, "OFFLOAD_WEBHOOK_CLAIM_TIMEOUT", DEFAULT_CLAIM_TIMEOUT, 1),
            rate_limit=rate_limit,
            read_timeout=_number(env, "OFFLOAD_WEBHOOK_READ_TIMEOUT", DEFAULT_READ_TIMEOUT, 0.1),
            max_header_bytes=int(
                _number(env, "OFFLOAD_WEBHOOK_MAX_HEADER_BYTES", DEFAULT_MAX_HEADER_BYTES, 1024)
            ),
            max_connections=int(_number(env, "OFFLOAD_WEBHOOK_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS, 1)),
            keep_alive=_number(env, "OFFLOAD_WEBHOOK_KEEP_ALIVE", DEFAULT_KEEP_ALIVE, 0.1),
            realtime_interval=_number(
                env, "OFFLOAD_REALTIME_INTERVAL", DEFAULT_REALTIME_INTERVAL, MIN_REALTIME_INTERVAL
            ),
        )

    def uvicorn_options(self) -> dict[str, Any]:
        """uvicorn's part of the abuse limits (offload/webhooks/abuse.py), for ``uvicorn.run``."""
        return uvicorn_options(
            read_timeout=self.read_timeout,
            max_header_bytes=self.max_header_bytes,
            max_connections=self.max_connections,
            keep_alive=self.keep_alive,
        )
