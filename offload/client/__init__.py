"""Trigger and follow runs from any Python app: ``from offload.client import Client``."""

from offload.client.api import IDEMPOTENCY_TAG, Client
from offload.client.batches import BatchItem
from offload.client.runs import BatchResult, Run, RunHandle, Status

__all__ = ["IDEMPOTENCY_TAG", "BatchItem", "BatchResult", "Client", "Run", "RunHandle", "Status"]
