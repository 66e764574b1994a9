"""Initial schema: users, articles, payments, usage.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

from resources.database.schema import BIGSERIAL, ID, JSON, KEY

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", ID, primary_key=True),
        sa.Column("email", sa.String(320)),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
    )
    op.create_table(
        "articles",
        sa.Column("id", ID, primary_key=True),
        sa.Column("user_id", ID, sa.ForeignKey("users.id"), nullable=False, index=True),
        sa.Column("run_id", ID, nullable=False, unique=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("keywords", JSON, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("meta_description", sa.Text, nullable=False),
        sa.Column("image_key", KEY),
        sa.Column("markdown_key", KEY, nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
    )
    op.create_table(
        "payments",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("user_id", ID, sa.ForeignKey("users.id"), index=True),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("data", JSON),
        sa.Column("occurred_at", WHEN, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
    )
    op.create_table(
        "usage",
        sa.Column("id", BIGSERIAL, primary_key=True, autoincrement=True),
        sa.Column("user_id", ID, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sa.Column("unit", sa.String(32), nullable=False),
        sa.Column("occurred_at", WHEN, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("job_name", sa.String(255), nullable=False),
        sa.Column("detail", JSON),
        sa.UniqueConstraint("run_id", "kind"),
    )
    op.create_index(None, "usage", ["user_id", "occurred_at"])


def downgrade() -> None:
    for table in ("usage", "payments", "articles", "users"):
        op.drop_table(table)
