"""The ``usage`` table: what each run family consumed for a user, one row per run family and kind."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import sqlalchemy as sa

from offload.sql_engines import insert as _insert
from resources.database.access import Tables, between, now
from resources.database.records import UsageItem, UsageRow
from resources.database.schema import usage
from resources.database.users import ensure_user_row


class Usage(Tables):
    def record_usage(
        self,
        user_id: str,
        run_id: str,
        job_name: str,
        items: Iterable[UsageItem],
        *,
        email: str | None = None,
        occurred_at: dt.datetime | None = None,
    ) -> int:
        """Record what run family ``run_id`` consumed for ``user_id``; returns the rows added. A kind the
        run family recorded before is left as it was (one row per run family and kind); zero quantities
        are skipped."""
        when = occurred_at or now()
        rows = [
            {"user_id": user_id, "kind": item.kind, "quantity": item.quantity, "unit": item.unit,
             "occurred_at": when, "run_id": run_id, "job_name": job_name, "detail": item.detail}
            for item in items
            if item.quantity > 0
        ]  # fmt: skip
        if not rows:
            return 0
        with self.engine().begin() as connection:
            ensure_user_row(connection, user_id, email)
            insert = _insert(connection, usage).values(rows)
            result = connection.execute(insert.on_conflict_do_nothing(index_elements=["run_id", "kind"]))
        return max(result.rowcount, 0)

    def usage_for(
        self, user_id: str, start: dt.datetime | None = None, end: dt.datetime | None = None
    ) -> list[UsageRow]:
        """A user's usage in ``[start, end)``, oldest first: what a monthly invoice bills."""
        query = sa.select(usage).where(usage.c.user_id == user_id).order_by(usage.c.occurred_at, usage.c.id)
        if start is not None:
            query = query.where(usage.c.occurred_at >= start)
        if end is not None:
            query = query.where(usage.c.occurred_at < end)
        with self.engine().connect() as connection:
            return [
                UsageRow(**{k: v for k, v in row._mapping.items() if k != "id"})
                for row in connection.execute(query)
            ]

    def usage_totals(self, start: dt.datetime, end: dt.datetime) -> dict[str, dict[str, int]]:
        """Usage in ``[start, end)`` summed per user and kind: ``{user_id: {kind: quantity}}``."""
        query = (
            sa.select(usage.c.user_id, usage.c.kind, sa.func.sum(usage.c.quantity))
            .where(between(usage.c.occurred_at, start, end))
            .group_by(usage.c.user_id, usage.c.kind)
            .order_by(usage.c.user_id, usage.c.kind)
        )
        totals: dict[str, dict[str, int]] = {}
        with self.engine().connect() as connection:
            for user_id, kind, quantity in connection.execute(query):
                totals.setdefault(user_id, {})[kind] = int(quantity)
        return totals
