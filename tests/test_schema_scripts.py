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


def test_a_column_check_is_asked_until_it_answers_yes_then_remembered():
    """SqlRunStorage's column checks (a connection and a table reflection each) are asked again while they
    answer no (a migration may add the columns), and never again for that database once they answer yes."""

    class Storage:
        def __init__(self, url: str):
            self._conn_string = url

    answers = {"sqlite:///a.db": [False, True, False], "sqlite:///b.db": [False]}
    asked: list[str] = []

    def check(storage: Storage) -> bool:
        asked.append(storage._conn_string)
        return answers[storage._conn_string].pop(0)

    remembered = schema_scripts.remember_yes(f"check-{id(answers)}", check)
    a, b = Storage("sqlite:///a.db"), Storage("sqlite:///b.db")
    assert [remembered(a) for _ in range(4)] == [False, True, True, True]
    assert remembered(b) is False  # another database is asked for itself
    assert asked == ["sqlite:///a.db", "sqlite:///a.db", "sqlite:///b.db"]


def test_the_run_storage_column_checks_are_remembered(tmp_path):
    from dagster._core.storage.runs.sql_run_storage import SqlRunStorage

    schema_scripts.install()
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        assert isinstance(instance.run_storage, SqlRunStorage)
        assert instance.run_storage.has_run_stats_index_cols()
        assert ("has_run_stats_index_cols", instance.run_storage._conn_string) in schema_scripts._known_yes
