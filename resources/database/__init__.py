"""The app database: users, articles, payments, usage, invoices and GitHub events, on SQLAlchemy Core.

One resource, ``AppDatabase``, for SQLite (the embedded default, a file under the data directory) and
Postgres (production; a Supabase connection string works). Setting it up for a run brings the schema to
the newest migration, so a fresh database needs no separate step. Every write is idempotent on a business
key (the run family, the provider's payment id), so a retried or re-executed step never writes twice.

Layout: ``resource.py`` the resource (URL, engine, migration on setup), one module per aggregate with its
queries (``users.py``, ``usage.py``, ``articles.py``, ``payments.py``, ``activity.py``, ``invoices.py``,
``github_events.py``), ``records.py`` the values they take and return, ``schema.py`` the tables,
``engine.py`` engines and migrations. The names below are the package's interface.
"""

from __future__ import annotations

from resources.database.payments import PAID_STATUSES
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
from resources.database.resource import AppDatabase, embedded_url

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
