"""The gateway's settings, all from environment variables, checked once at start with one-line errors."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from offload.errors import ConfigurationError
from offload.webhooks.inbox import default_url
from offload.webhooks.launch import DEFAULT_CLAIM_TIMEOUT
from offload.webhooks.providers import PROVIDERS

DEFAULT_MAX_BYTES = 1024 * 1024
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
        return cls(
            inbox_url=default_url(env),
            secrets=secrets,
            max_bytes=int(_number(env, "OFFLOAD_WEBHOOK_MAX_BYTES", DEFAULT_MAX_BYTES, 1)),
            launch=launch,
            claim_timeout=_number(env, "OFFLOAD_WEBHOOK_CLAIM_TIMEOUT", DEFAULT_CLAIM_TIMEOUT, 1),
        )
