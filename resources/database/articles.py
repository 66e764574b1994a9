"""The ``articles`` table: one article per run family of ``content_workflow``."""

from __future__ import annotations

from dataclasses import asdict

import sqlalchemy as sa

from offload.sql_engines import insert as _insert
from resources.database.access import Tables
from resources.database.records import Article
from resources.database.schema import articles
from resources.database.users import ensure_user_row


class Articles(Tables):
    def save_article(self, article: Article) -> str:
        """Insert ``article`` unless its run family saved one already; returns the stored article's id."""
        values = asdict(article)  # its fields are the table's columns
        with self.engine().begin() as connection:
            ensure_user_row(connection, article.user_id, None)
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
