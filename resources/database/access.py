"""What the queries of every aggregate share: the resource's engine, the clock and a half-open time range.

``AppDatabase`` (resources/database/resource.py) is one Dagster resource assembled from one mixin per
aggregate (users.py, usage.py, articles.py, payments.py, activity.py, invoices.py, github_events.py):
steps keep asking for a single ``database: AppDatabase``, while each table's queries live in a small module
of their own. ``Tables`` is the mixins' common base: it only declares the engine ``AppDatabase`` provides.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa


class Tables:
    """The base of every aggregate's mixin: queries run on ``self.engine()``."""

    def engine(self) -> sa.Engine:
        raise NotImplementedError  # AppDatabase's own, built from its URL


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def between(column: sa.ColumnElement[dt.datetime], start: dt.datetime, end: dt.datetime) -> Any:
    """``start <= column < end``: consecutive ranges (days, months) never count a row twice."""
    return sa.and_(column >= start, column < end)
