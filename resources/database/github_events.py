"""The ``github_events`` table: GitHub deliveries, and whether Slack has been told of each (once)."""

from __future__ import annotations

from dataclasses import asdict

import sqlalchemy as sa

from offload.sql_engines import insert as _insert
from resources.database.access import Tables, now
from resources.database.records import GithubEvent
from resources.database.schema import github_events


class GithubEvents(Tables):
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
                .values(notified_at=now(), slack_ts=slack_ts)
            )
