"""The app database: users, articles, payments, usage and GitHub events, on SQLAlchemy Core.

One resource, ``AppDatabase``, for SQLite (the embedded default, a file under the data directory) and
Postgres (production; a Supabase connection string works). Setting it up for a run brings the schema to
the newest migration, so a fresh database needs no separate step. Every write is idempotent on a business
key (the run family, the provider's payment id), so a retried or re-executed step never writes twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field, PrivateAttr

from offload import paths
from offload.errors import ConfigurationError, configuration_checked, require_settings
from offload.sql_engines import insert as _insert
from resources.database import engine as engines
from resources.database.records import (
    UNITS,
    Activity,
    Article,
    GithubEvent,
    Invoice,
    InvoiceLine,
    Payment,
    UsageItem,
    UsageRow,
)
from resources.database.schema import articles, github_events, invoices, payments, usage, users

__all__ = [
    "PAID_STATUSES",
    "UNITS",
    "Activity",
    "AppDatabase",
    "Article",
    "GithubEvent",
    "Invoice",
    "InvoiceLine",
    "Payment",
    "UsageItem",
    "UsageRow",
    "embedded_url",
]

# Payment statuses that mean the money arrived, as providers spell them (Stripe: succeeded, paid).
PAID_STATUSES = ("succeeded", "paid")

# Migrated in this process already: later runs skip even the version check.
_MIGRATED: set[str] = set()


def embedded_url() -> str:
    """The embedded default: a SQLite file under the data directory."""
    return f"sqlite:///{paths.data_dir() / 'offload.db'}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AppDatabase(dg.ConfigurableResource):
    """The application's own tables (not Dagster's run storage)."""

    url: str = Field(description="SQLAlchemy URL: sqlite:///path or postgresql://... (DATABASE_URL).")

    _engine: sa.Engine | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        with configuration_checked(context):
            require_settings(self, {"url": "DATABASE_URL"})
            if self.url not in _MIGRATED:
                self.migrate()
                _MIGRATED.add(self.url)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def engine(self) -> sa.Engine:
        if self._engine is None:
            try:
                self._engine = engines.create_engine(self.url)
            except sa.exc.ArgumentError:  # not a URL at all; the message would quote it, password and all
                raise ConfigurationError(
                    "DATABASE_URL: not a database URL; use postgresql://user:password@host/db or sqlite:///path"
                ) from None
        return self._engine

    def migrate(self) -> str:
        """Bring the schema to the newest migration; safe to call at any time, from several processes."""
        return engines.migrate(self.engine())

    def schema_revision(self) -> str | None:
        return engines.current_revision(self.engine())

    # -- users ---------------------------------------------------------------------------------------------

    def ensure_user(self, user_id: str, email: str | None = None) -> None:
        """Create the user on first sight; a known email is kept unless a new one is given."""
        with self.engine().begin() as connection:
            self._ensure_user(connection, user_id, email)

    def _ensure_user(self, connection: sa.Connection, user_id: str, email: str | None) -> None:
        now = _now()
        insert = _insert(connection, users).values(id=user_id, email=email, created_at=now, updated_at=now)
        if email is None:
            connection.execute(insert.on_conflict_do_nothing(index_elements=["id"]))
        else:
            connection.execute(
                insert.on_conflict_do_update(index_elements=["id"], set_={"email": email, "updated_at": now})
            )

    def user_email(self, user_id: str) -> str | None:
        with self.engine().connect() as connection:
            return connection.scalar(sa.select(users.c.email).where(users.c.id == user_id))

    # -- usage ---------------------------------------------------------------------------------------------

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
        when = occurred_at or _now()
        rows = [
            {"user_id": user_id, "kind": item.kind, "quantity": item.quantity, "unit": item.unit,
             "occurred_at": when, "run_id": run_id, "job_name": job_name, "detail": item.detail}
            for item in items
            if item.quantity > 0
        ]  # fmt: skip
        if not rows:
            return 0
        with self.engine().begin() as connection:
            self._ensure_user(connection, user_id, email)
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

    # -- articles ------------------------------------------------------------------------------------------

    def save_article(self, article: Article) -> str:
        """Insert ``article`` unless its run family saved one already; returns the stored article's id."""
        values = asdict(article)  # its fields are the table's columns
        with self.engine().begin() as connection:
            self._ensure_user(connection, article.user_id, None)
            connection.execute(
                _insert(connection, articles).values(values).on_conflict_do_nothing(index_elements=["run_id"])
            )
            stored = connection.scalar(sa.select(articles.c.id).where(articles.c.run_id == article.run_id))
        assert stored is not None
        return str(stored)

    def get_article(self, article_id: str) -> Article | None:
        with self.engine().connect() as connection:
            row = connection.execute(sa.select(articles).where(articles.c.id == article_id)).first()
        return Article(**row._mapping) if row is not None else None

    # -- payments ------------------------------------------------------------------------------------------

    def record_payment(self, payment: Payment) -> None:
        """Insert the payment, or update it when the provider reports it again (a field it leaves out keeps
        its stored value)."""
        values: dict[str, Any] = asdict(payment) | {"updated_at": _now()}
        changing = ("status", "amount", "currency", "updated_at")
        kept_unless_given = ("description", "data", "user_id")
        with self.engine().begin() as connection:
            if payment.user_id is not None:
                self._ensure_user(connection, payment.user_id, None)
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

    # -- reporting -----------------------------------------------------------------------------------------

    def activity(self, start: dt.datetime, end: dt.datetime) -> Activity:
        """New users, payments and usage in ``[start, end)``: the app half of the daily report."""
        with self.engine().connect() as connection:
            new_users = connection.scalar(
                sa.select(sa.func.count()).select_from(users).where(_between(users.c.created_at, start, end))
            )
            by_status: dict[str, int] = {
                status: count
                for status, count in connection.execute(
                    sa.select(payments.c.status, sa.func.count())
                    .where(_between(payments.c.occurred_at, start, end))
                    .group_by(payments.c.status)
                )
            }
            revenue: dict[str, int] = {
                currency: amount
                for currency, amount in connection.execute(
                    sa.select(payments.c.currency, sa.func.sum(payments.c.amount))
                    .where(_between(payments.c.occurred_at, start, end))
                    .where(payments.c.status.in_(PAID_STATUSES))
                    .group_by(payments.c.currency)
                )
            }
            used = connection.execute(
                sa.select(usage.c.kind, usage.c.unit, sa.func.sum(usage.c.quantity))
                .where(_between(usage.c.occurred_at, start, end))
                .group_by(usage.c.kind, usage.c.unit)
            ).all()
            active = connection.scalar(
                sa.select(sa.func.count(sa.distinct(usage.c.user_id))).where(
                    _between(usage.c.occurred_at, start, end)
                )
            )
        return Activity(
            new_users=int(new_users or 0),
            payments=sum(by_status.values()),
            payments_by_status={str(k): int(v) for k, v in sorted(by_status.items())},
            revenue={str(k): int(v) for k, v in sorted(revenue.items())},
            usage={str(kind): (int(total), str(unit)) for kind, unit, total in sorted(used)},
            active_users=int(active or 0),
        )

    def usage_totals(self, start: dt.datetime, end: dt.datetime) -> dict[str, dict[str, int]]:
        """Usage in ``[start, end)`` summed per user and kind: ``{user_id: {kind: quantity}}``."""
        query = (
            sa.select(usage.c.user_id, usage.c.kind, sa.func.sum(usage.c.quantity))
            .where(_between(usage.c.occurred_at, start, end))
            .group_by(usage.c.user_id, usage.c.kind)
            .order_by(usage.c.user_id, usage.c.kind)
        )
        totals: dict[str, dict[str, int]] = {}
        with self.engine().connect() as connection:
            for user_id, kind, quantity in connection.execute(query):
                totals.setdefault(user_id, {})[kind] = int(quantity)
        return totals

    # -- invoices ------------------------------------------------------------------------------------------

    def save_invoice(self, invoice: Invoice) -> tuple[Invoice, bool]:
        """Store ``invoice`` unless the user has one for its month; returns the stored invoice and whether
        this call created it. An existing invoice is kept as it was: a month is billed once."""
        values = asdict(invoice)  # its fields are the table's columns; lines become JSON
        with self.engine().begin() as connection:
            self._ensure_user(connection, invoice.user_id, None)
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
                .values(email_id=email_id, emailed_at=at or _now())
            )

    # -- GitHub events -------------------------------------------------------------------------------------

    def record_github_event(self, event: GithubEvent) -> GithubEvent:
        """Insert the delivery unless it is there already; returns the stored row (which says whether Slack
        has been told)."""
        values = {k: v for k, v in asdict(event).items() if k not in ("notified_at", "slack_ts")}
        with self.engine().begin() as connection:
            connection.execute(
                _insert(connection, github_events)
                .values(values)
                .on_conflict_do_nothing(index_elements=["delivery_id"])
            )
        stored = self.github_event(event.delivery_id)
        assert stored is not None
        return stored

    def github_event(self, delivery_id: str) -> GithubEvent | None:
        with self.engine().connect() as connection:
            row = connection.execute(
                sa.select(github_events).where(github_events.c.delivery_id == delivery_id)
            ).first()
        return GithubEvent(**row._mapping) if row is not None else None

    def mark_github_notified(self, delivery_id: str, slack_ts: str) -> None:
        with self.engine().begin() as connection:
            connection.execute(
                sa.update(github_events)
                .where(github_events.c.delivery_id == delivery_id, github_events.c.notified_at.is_(None))
                .values(notified_at=_now(), slack_ts=slack_ts)
            )


def _between(column: sa.ColumnElement[dt.datetime], start: dt.datetime, end: dt.datetime) -> Any:
    return sa.and_(column >= start, column < end)


def _invoice(row: sa.Row[Any]) -> Invoice:
    values = {k: v for k, v in row._mapping.items() if k != "id"}
    values["lines"] = [InvoiceLine(**line) for line in values["lines"]]
    return Invoice(**values)
