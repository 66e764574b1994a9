"""The ``invoices`` table: one invoice per user and month, which records its document and its email."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa

from offload.sql_engines import insert as _insert
from resources.database.access import Tables, now
from resources.database.records import Invoice, InvoiceLine
from resources.database.schema import invoices
from resources.database.users import ensure_user_row


class Invoices(Tables):
    def save_invoice(self, invoice: Invoice) -> tuple[Invoice, bool]:
        """Store ``invoice`` unless the user has one for its month; returns the stored invoice and whether
        this call created it. An existing invoice is kept as it was: a month is billed once."""
        values = asdict(invoice)  # its fields are the table's columns; lines become JSON
        with self.engine().begin() as connection:
            ensure_user_row(connection, invoice.user_id, None)
            result = connection.execute(
                _insert(connection, invoices)
                .values(values)
                .on_conflict_do_nothing(index_elements=["user_id", "month"])
            )
            row = connection.execute(
                sa.select(invoices).where(
                    invoices.c.user_id == invoice.user_id, invoices.c.month == invoice.month
                )
            ).one()
        return _invoice(row), result.rowcount == 1

    def get_invoice(self, user_id: str, month: str) -> Invoice | None:
        with self.engine().connect() as connection:
            row = connection.execute(
                sa.select(invoices).where(invoices.c.user_id == user_id, invoices.c.month == month)
            ).first()
        return _invoice(row) if row is not None else None

    def invoices_for_month(self, month: str) -> list[Invoice]:
        with self.engine().connect() as connection:
            rows = connection.execute(
                sa.select(invoices).where(invoices.c.month == month).order_by(invoices.c.user_id)
            ).all()
        return [_invoice(row) for row in rows]

    def set_invoice_document(self, number: str, document_key: str) -> None:
        with self.engine().begin() as connection:
            connection.execute(
                sa.update(invoices).where(invoices.c.number == number).values(document_key=document_key)
            )

    def mark_invoice_emailed(self, number: str, email_id: str, at: dt.datetime | None = None) -> None:
        with self.engine().begin() as connection:
            connection.execute(
                sa.update(invoices)
                .where(invoices.c.number == number)
                .values(email_id=email_id, emailed_at=at or now())
            )


def _invoice(row: sa.Row[Any]) -> Invoice:
    values = {k: v for k, v in row._mapping.items() if k != "id"}
    values["lines"] = [InvoiceLine(**line) for line in values["lines"]]
    return Invoice(**values)
