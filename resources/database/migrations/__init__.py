"""Alembic migrations of the app database, applied in order by ``resources.database.engine.migrate``.

To change the schema: edit ``schema.py``, then add a file to ``versions/`` (copy the newest, give it the
next ``revision`` and make ``down_revision`` the one before) whose ``upgrade`` makes the same change with
``op`` calls; ``op.batch_alter_table`` for changes to an existing table, so SQLite can apply it too. The
schema test fails until the two agree.
"""
