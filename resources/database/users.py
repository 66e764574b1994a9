"""The ``users`` table: created on first sight by any job that names a user."""

from __future__ import annotations

import sqlalchemy as sa

from offload.sql_engines import insert as _insert
from resources.database.access import Tables, now
from resources.database.schema import users


def ensure_user_row(connection: sa.Connection, user_id: str, email: str | None) -> None:
    """Inside the caller's transaction, so every row that names a user finds it there."""
    at = now()
    insert = _insert(connection, users).values(id=user_id, email=email, created_at=at, updated_at=at)
    if email is None:
        connection.execute(insert.on_conflict_do_nothing(index_elements=["id"]))
    else:
        connection.execute(
            insert.on_conflict_do_update(index_elements=["id"], set_={"email": email, "updated_at": at})
        )


class Users(Tables):
    def ensure_user(self, user_id: str, email: str | None = None) -> None:
        """Create the user on first sight; a known email is kept unless a new one is given."""
        with self.engine().begin() as connection:
            ensure_user_row(connection, user_id, email)

    def user_email(self, user_id: str) -> str | None:
        with self.engine().connect() as connection:
            return connection.scalar(sa.select(users.c.email).where(users.c.id == user_id))
