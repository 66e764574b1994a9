"""``invoicing``: the run config is the payload (``InvoicingPayload``); ``monthly_invoicing`` runs it."""

from __future__ import annotations

from typing import Any

import dagster as dg

from offload.payload import payload_mapping
from offload.runtime.concurrency import Queue
from pipelines.invoicing.payload import InvoicingPayload
from pipelines.invoicing.steps import bill_usage, email_invoices, store_documents

# One invoicing run at a time (the invoices table is unique per user and month besides).
QUEUE = Queue("invoicing", limit=1)


def _run_config(payload: InvoicingPayload) -> dict[str, Any]:
    return {"ops": {"bill_usage": {"config": payload.model_dump()}}}


@dg.job(
    description="Invoice each user's usage of the previous calendar month: one invoice per user and month "
    "in the app database, a document in storage, an email.",
    config=payload_mapping(InvoicingPayload, _run_config),
    tags={"offload/kind": "billing", **QUEUE.job_tags()},
)
def invoicing() -> None:
    email_invoices(store_documents(bill_usage()))
