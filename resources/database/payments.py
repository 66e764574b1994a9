"""The ``payments`` table: one row per provider payment, written again when the provider reports a change."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import sqlalchemy as sa

from offload.sql_engines import insert as _insert
from resources.database.access import Tables, now
from resources.database.records import Payment
from resources.database.schema import payments
from resources.database.users import ensure_user_row

# Payment statuses that mean the money arrived, as providers spell them (Stripe: succeeded, paid).
PAID_STATUSES = ("succeeded", "paid")


class Payments(Tables):
    def record_payment(self, payment: Payment) -> None:
        """Insert the payment, or update it when the provider reports it again (a field it leaves out keeps
        its stored value)."""
        values: dict[str, Any] = asdict(payment) | {"updated_at": now()}
        changing = ("status", "amount", "currency", "updated_at")
        kept_unless_given = ("description", "data", "user_id")
        with self.engine().begin() as connection:
            if payment.user_id is not None:
                ensure_user_row(connection, payment.user_id, None)
            insert = _insert(connection, payments).values(values)
            connection.execute(
                insert.on_conflict_do_update(
                    index_elements=["id"],
                    set_={k: insert.excluded[k] for k in changing}
                    | {k: sa.func.coalesce(insert.excluded[k], payments.c[k]) for k in kept_unless_given},
                )
            )

    def get_payment(self, payment_id: str) -> Payment | None:
        with self.engine().connect() as connection:
            row = connection.execute(sa.select(payments).where(payments.c.id == payment_id)).first()
        if row is None:
            return None
        return Payment(**{k: v for k, v in row._mapping.items() if k != "updated_at"})
