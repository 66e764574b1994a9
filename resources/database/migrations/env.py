"""Alembic's entry point for the app database: runs on the connection ``AppDatabase.migrate`` hands over
(already inside the transaction that holds the migration lock), never on a URL of its own."""

from alembic import context

from resources.database.engine import VERSION_TABLE
from resources.database.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,  # SQLite alters a table by copying it; batch mode writes migrations that do
)
with context.begin_transaction():
    context.run_migrations()
