"""offload/schema_scripts.py: Dagster's schema check reads the migration scripts once per process, and still
compares each database with the real newest revision."""

import dagster as dg
from alembic.script import ScriptDirectory
from alembic.util import coerce_resource_to_filename
from dagster._core.storage.runs.sqlite import sqlite_run_storage
from dagster._core.storage.sql import check_alembic_revision, get_alembic_config

from offload.runtime import schema_scripts


def fresh_head() -> str:
    """The newest revision, read from disk without any cache."""
    location = get_alembic_config(sqlite_run_storage.__file__).get_main_option("script_location")
    assert location is not None
    head = ScriptDirectory(coerce_resource_to_filename(location)).as_revision_number("head")
    assert isinstance(head, str)
    return head


def test_scripts_are_read_once_per_location_and_the_check_is_unchanged(tmp_path):
    schema_scripts.warm()
    config = get_alembic_config(sqlite_run_storage.__file__)
    location = config.get_main_option("script_location")
    other = get_alembic_config(sqlite_run_storage.__file__, script_location=location)
    assert other is not config
    assert ScriptDirectory.from_config(config) is ScriptDirectory.from_config(other)
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        storage = instance.run_storage
        assert isinstance(storage, sqlite_run_storage.SqliteRunStorage)
        with storage.connect() as connection:
            database, head = check_alembic_revision(config, connection)
    assert head == fresh_head()
    assert database == head  # a new instance is created at the newest revision


def test_install_twice_keeps_one_cache():
    schema_scripts.install()
    patched = ScriptDirectory.from_config
    schema_scripts.install()
    assert ScriptDirectory.from_config == patched
