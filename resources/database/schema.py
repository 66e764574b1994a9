"""The app database's tables, as SQLAlchemy Core objects the code queries with.

The migrations under ``migrations/versions/`` create and change these tables; a test compares the migrated
database with this module on SQLite and on Postgres, so the two cannot drift apart.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from offload.sql_engines import UTCDateTime

# Constraint names fixed by convention, so a later migration can name the constraint it changes.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# JSONB on Postgres (indexable, compact), JSON text elsewhere; None is SQL NULL, not the JSON null.
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
ID = sa.String(64)  # ids that also become storage keys: offload.keys.ID_PATTERN
KEY = sa.String(1024)  # storage keys (S3's limit)
# BIGINT on Postgres; SQLite only auto-increments a column declared INTEGER.
BIGSERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


users = sa.Table(
    "users",
    metadata,
    sa.Column("id", ID, primary_key=True),  # the web app's own user id
    sa.Column("email", sa.String(320)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

articles = sa.Table(
    "articles",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("run_id", ID, nullable=False, unique=True),  # root run of the run family that wrote it
    sa.Column("topic", sa.Text, nullable=False),
    sa.Column("keywords", JSON, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("meta_description", sa.Text, nullable=False),
    sa.Column("image_key", KEY),
    sa.Column("markdown_key", KEY, nullable=False),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

payments = sa.Table(
    "payments",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),  # the provider's id, e.g. pi_... or ch_...
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("user_id", ID, sa.ForeignKey("users.id"), index=True),
    sa.Column("amount", sa.BigInteger, nullable=False),  # in the currency's minor unit (cents)
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("data", JSON),
    sa.Column("occurred_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

usage = sa.Table(
    "usage",
    metadata,
    sa.Column("id", BIGSERIAL, primary_key=True, autoincrement=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("quantity", sa.BigInteger, nullable=False),
    sa.Column("unit", sa.String(32), nullable=False),
    sa.Column("occurred_at", UTCDateTime, nullable=False),
    sa.Column("run_id", ID, nullable=False),  # root run of the run family that consumed it
    sa.Column("job_name", sa.String(255), nullable=False),
    sa.Column("detail", JSON),
    # One row per run family and kind: a retried or re-executed step cannot bill twice.
    sa.UniqueConstraint("run_id", "kind"),
    # The monthly invoice reads one user's rows in a time range.
    sa.Index(None, "user_id", "occurred_at"),
)

invoices = sa.Table(
    "invoices",
    metadata,
    sa.Column("id", BIGSERIAL, primary_key=True, autoincrement=True),
    sa.Column("number", sa.String(96), nullable=False, unique=True),  # INV-202602-<user_id>
    sa.Column("user_id", ID, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("month", sa.String(7), nullable=False),  # the billed calendar month, YYYY-MM
    sa.Column("period_start", UTCDateTime, nullable=False),
    sa.Column("period_end", UTCDateTime, nullable=False),  # exclusive
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("total", sa.BigInteger, nullable=False),  # minor units (cents)
    sa.Column("lines", JSON, nullable=False),
    sa.Column("document_key", KEY),
    sa.Column("email_id", sa.String(255)),
    sa.Column("emailed_at", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # One invoice per user and month: the monthly run, rerun or retried, bills once.
    sa.UniqueConstraint("user_id", "month"),
)

github_events = sa.Table(
    "github_events",
    metadata,
    sa.Column("delivery_id", sa.String(255), primary_key=True),  # X-GitHub-Delivery
    sa.Column("event", sa.String(64), nullable=False),  # X-GitHub-Event: push, pull_request
    sa.Column("action", sa.String(64)),  # pull_request: opened, closed, ...
    sa.Column("repository", sa.String(255), nullable=False),  # owner/name
    sa.Column("sender", sa.String(255)),
    sa.Column("summary", sa.Text, nullable=False),  # the line posted to Slack
    sa.Column("url", sa.Text),
    sa.Column("data", JSON),  # the fields the summary came from (ref, commits, PR number, ...)
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("notified_at", UTCDateTime),  # posted to Slack; set once, so a retried step posts once
    sa.Column("slack_ts", sa.String(64)),
    # Activity of one repository, newest first.
    sa.Index(None, "repository", "received_at"),
)
