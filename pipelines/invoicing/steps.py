"""``bill_usage`` -> ``store_documents`` -> ``email_invoices``: each step does its part once per invoice.

The app database is the record of what was done: an invoice row exists once per user and month (a unique
constraint), its ``document_key`` says the document is stored, its ``emailed_at`` that the user has it. A
second run for the same month, a retried step or a re-execution therefore finds the work done and does
nothing again; the email's idempotency key (the invoice number) covers a crash between sending and
recording the send.
"""

import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import dagster as dg

from offload.errors import AbortTaskRunError
from offload.keys import invoice_key
from offload.log import StepLog
from offload.result import job_result
from offload.retry import retrying
from pipelines.invoicing.documents import invoice_html, invoice_text, money
from pipelines.invoicing.payload import InvoicingPayload
from pipelines.invoicing.prices import effective_prices, invoice_lines
from resources.database import AppDatabase, Invoice
from resources.email import Email, EmailSender, EmailSendError
from resources.storage import Storage


def invoice_number(month: str, user_id: str) -> str:
    return f"INV-{month.replace('-', '')}-{user_id}"


@dg.op
@retrying()
def bill_usage(
    context: dg.OpExecutionContext, config: InvoicingPayload, database: AppDatabase
) -> list[Invoice]:
    """One invoice per user with usage in the month, priced; a user invoiced for the month already keeps
    the invoice they have."""
    log = StepLog(context)
    month, start, end = config.billed_month()
    prices = effective_prices(config.prices)
    invoices, created = [], 0
    for user_id, usage in database.usage_totals(start, end).items():
        lines = invoice_lines(usage, prices)
        invoice = Invoice(
            number=invoice_number(month, user_id),
            user_id=user_id,
            month=month,
            period_start=start,
            period_end=end,
            currency=config.currency,
            total=sum(line.amount for line in lines),
            lines=lines,
        )
        stored, new = database.save_invoice(invoice)
        created += new
        invoices.append(stored)
    totals: dict[str, int] = defaultdict(int)
    for invoice in invoices:
        totals[invoice.currency] += invoice.total
    log.info("usage billed", {"month": month, "from": start.isoformat(), "until": end.isoformat(),
                              "invoices": len(invoices), "created": created})  # fmt: skip
    context.add_output_metadata({
        "month": month,
        "invoices": len(invoices),
        "created": created,
        "already_invoiced": len(invoices) - created,
        **{f"total_{currency}": money(total) for currency, total in totals.items()},
        "prices": dg.MetadataValue.json({kind: str(price) for kind, price in prices.items()}),
    })  # fmt: skip
    return invoices


@dg.op
@retrying()
def store_documents(
    context: dg.OpExecutionContext, invoices: list[Invoice], storage: Storage, database: AppDatabase
) -> list[Invoice]:
    """Each invoice as an HTML document at ``invoices/{user_id}/{month}.html``, unless it is stored."""
    log = StepLog(context)
    stored = []
    written = 0
    with tempfile.TemporaryDirectory() as scratch:
        for invoice in invoices:
            key = invoice_key(invoice.user_id, invoice.month)
            if invoice.document_key != key or not storage.exists(key):
                path = Path(scratch) / f"{invoice.user_id}.html"
                path.write_text(invoice_html(invoice), encoding="utf-8")
                storage.put_file(key, path, "text/html; charset=utf-8")
                database.set_invoice_document(invoice.number, key)
                written += 1
            stored.append(database.get_invoice(invoice.user_id, invoice.month) or invoice)
    log.info("documents stored", {"written": written, "already_stored": len(invoices) - written})
    context.add_output_metadata({"written": written, "already_stored": len(invoices) - written})
    return stored


@dg.op
@retrying()
def email_invoices(
    context: dg.OpExecutionContext, invoices: list[Invoice], email: EmailSender, database: AppDatabase
) -> dg.Output[dict[str, Any]]:
    """Email each user their invoice once. A user without an address is reported, not failed."""
    log = StepLog(context)
    sent, already, no_address, errors = [], 0, [], []
    retryable: EmailSendError | None = None
    for invoice in invoices:
        if invoice.emailed_at is not None:
            already += 1
            continue
        address = database.user_email(invoice.user_id)
        if not address:
            no_address.append(invoice.user_id)
            continue
        amount = f"{money(invoice.total)} {invoice.currency.upper()}"
        message = Email(
            to=address,
            subject=f"Your invoice {invoice.number}: {amount}",
            html=invoice_html(invoice),
            text=invoice_text(invoice),
        )
        try:
            email_id = email.send(message, idempotency_key=f"invoice/{invoice.number}")
        except EmailSendError as error:
            errors.append(f"{invoice.number}: {error}")
            retryable = retryable or (error if error.retryable else None)
            continue
        database.mark_invoice_emailed(invoice.number, email_id)
        sent.append(invoice.number)
    if no_address:
        log.warning("users without an email address were not sent their invoice", {"users": no_address})
    result = {"sent": len(sent), "already_sent": already, "no_address": no_address, "failed": len(errors)}
    log.info("invoices emailed", result)
    if errors:
        if retryable is not None:
            raise retryable  # the step's retry sends the rest; those sent are recorded and skipped
        raise AbortTaskRunError(f"email_invoices: {len(errors)} not sent: {errors[0]}")
    return job_result(
        result, metadata={"sent": len(sent), "already_sent": already, "no_address": len(no_address)}
    )
