"""Trigger and follow runs from any Python app: ``from offload.client import Client`` (or ``AsyncClient``).

Imports no Dagster: a web app installs only the client (clients/python, docs/client.md). What only some
calls need loads on first use: httpx with the first ``Client``, SQLAlchemy with the first idempotency key
or batch, itsdangerous with the first public token, asyncio with ``AsyncClient`` (below).
"""

from typing import TYPE_CHECKING, Any

from offload.client.api import IDEMPOTENCY_TAG, Client
from offload.client.batches import BatchItem
from offload.client.runs import BatchResult, Run, RunHandle, Status
from offload.client.tokens import InvalidTokenError, create_public_token, verify_public_token

if TYPE_CHECKING:
    from offload.client.asyncio import AsyncClient


def __getattr__(name: str) -> Any:
    """``AsyncClient`` loads asyncio, which a sync app (Django, Flask) never needs (PEP 562)."""
    if name == "AsyncClient":
        from offload.client.asyncio import AsyncClient

        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "IDEMPOTENCY_TAG",
    "AsyncClient",
    "BatchItem",
    "BatchResult",
    "Client",
    "InvalidTokenError",
    "Run",
    "RunHandle",
    "Status",
    "create_public_token",
    "verify_public_token",
]
