"""Trigger and follow runs from any Python app: ``from offload.client import Client`` (or ``AsyncClient``).

Imports no Dagster: a web app installs only the client (clients/python, docs/client.md)."""

from offload.client.api import IDEMPOTENCY_TAG, Client
from offload.client.asyncio import AsyncClient
from offload.client.batches import BatchItem
from offload.client.runs import BatchResult, Run, RunHandle, Status
from offload.client.tokens import InvalidTokenError, create_public_token, verify_public_token

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
