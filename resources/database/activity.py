"""The app's activity over a time range (new users, payments, revenue, usage): the app half of the daily
report. Read-only, across the users, payments and usage tables."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from resources.database.access import Tables, between
from resources.database.payments import PAID_STATUSES
from resources.database.records import Activity
from resources.database.schema import payments, usage, users


class ActivityReport(Tables):
    def activity(self, start: dt.datetime, end: dt.datetime) -> Activity:
        """New users, payments and usage in ``[start, end)``: the app half of the daily report."""
        with self.engine().connect() as connection:
            new_users = connection.scalar(
                sa.select(sa.func.count()).select_from(users).where(between(users.c.created_at, start, end))
            )
            by_status: dict[str, int] = {
                status: count
                for status, count in connection.execute(
                    sa.select(payments.c.status, sa.func.count())
                    .where(between(payments.c.occurred_at, start, end))
                    .group_by(payments.c.status)
                )
            }
            revenue: dict[str, int] = {
                currency: amount
                for currency, amount in connection.execute(
                    sa.select(payments.c.currency, sa.func.sum(payments.c.amount))
                    .where(between(payments.c.occurred_at, start, end))
                    .where(payments.c.status.in_(PAID_STATUSES))
                    .group_by(payments.c.currency)
                )
            }
            used = connection.execute(
                sa.select(usage.c.kind, usage.c.unit, sa.func.sum(usage.c.quantity))
                .where(between(usage.c.occurred_at, start, end))
                .group_by(usage.c.kind, usage.c.unit)
            ).all()
            active = connection.scalar(
                sa.select(sa.func.count(sa.distinct(usage.c.user_id))).where(
                    between(usage.c.occurred_at, start, end)
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
