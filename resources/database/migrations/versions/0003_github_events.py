"""github_events: GitHub push and pull_request deliveries recorded by the github_webhook job.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

from resources.database.schema import JSON

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "github_events",
        sa.Column("delivery_id", sa.String(255), primary_key=True),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64)),
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("sender", sa.String(255)),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("url", sa.Text),
        sa.Column("data", JSON),
        sa.Column("received_at", WHEN, nullable=False),
        sa.Column("notified_at", WHEN),
        sa.Column("slack_ts", sa.String(64)),
    )
    op.create_index(None, "github_events", ["repository", "received_at"])


def downgrade() -> None:
    op.drop_table("github_events")
