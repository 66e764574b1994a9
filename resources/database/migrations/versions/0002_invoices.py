"""Invoices: one per user and calendar month, written by monthly_invoicing.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

from resources.database.schema import BIGSERIAL, ID, JSON, KEY

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "invoices",
        sa.Column("id", BIGSERIAL, primary_key=True, autoincrement=True),
        sa.Column("number", sa.String(96), nullable=False, unique=True),
        sa.Column("user_id", ID, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("period_start", WHEN, nullable=False),
        sa.Column("period_end", WHEN, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.Column("lines", JSON, nullable=False),
        sa.Column("document_key", KEY),
        sa.Column("email_id", sa.String(255)),
        sa.Column("emailed_at", WHEN),
        sa.Column("created_at", WHEN, nullable=False),
        sa.UniqueConstraint("user_id", "month"),
    )


def downgrade() -> None:
    op.drop_table("invoices")
