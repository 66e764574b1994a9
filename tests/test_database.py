"""The app database, the same tests on SQLite and on the real PostgreSQL of this machine (a database of the
session's own): migrations bring an empty database to the schema the code queries, run again they change
nothing, and several processes migrating at once migrate once; usage is one row per run family and kind
and is read back by user and month; articles and payments are written idempotently; datetimes are aware
UTC; and DATABASE_URL's forms (Supabase's postgres://) are understood."""

import datetime as dt
import threading
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from benchmarks.support.postgres import temporary_database
from offload.errors import ConfigurationError
from resources.database import AppDatabase, Article, Payment, UsageItem
from resources.database.engine import VERSION_TABLE, head_revision, normalize_url
from resources.database.schema import metadata


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path) -> Iterator[str]:
    """An empty database: a fresh SQLite file, or a fresh Postgres database for this test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.db'}"
    else:
        with temporary_database("offload_db_test") as url:
            yield url


@pytest.fixture
def db(database_url) -> Iterator[AppDatabase]:
    database = AppDatabase(url=database_url)
    database.migrate()
    yield database
    database.engine().dispose()


def at(day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, tzinfo=dt.UTC)


# --- migrations -------------------------------------------------------------------------------------------


def test_migrations_create_the_schema_the_code_queries(database_url):
    database = AppDatabase(url=database_url)
    assert database.schema_revision() is None

    assert database.migrate() == head_revision()

    assert database.schema_revision() == head_revision()
    with database.engine().connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(context, metadata) == []  # tables, columns, types, indexes, constraints
        tables = set(sa.inspect(connection).get_table_names())
    assert tables == {"users", "articles", "payments", "usage", "invoices", "github_events", VERSION_TABLE}
    database.engine().dispose()


def test_migrating_again_changes_nothing(db):
    db.ensure_user("u1", "a@example.com")
    with db.engine().connect() as connection:
        before = sorted(sa.inspect(connection).get_table_names())

    assert db.migrate() == head_revision()
    assert db.migrate() == head_revision()

    with db.engine().connect() as connection:
        assert sorted(sa.inspect(connection).get_table_names()) == before
        assert connection.scalar(sa.text(f"SELECT count(*) FROM {VERSION_TABLE}")) == 1
    assert db.user_email("u1") == "a@example.com"


def test_concurrent_migrations_of_a_fresh_database_migrate_it_once(database_url):
    """Runs starting together on an empty database: each migrates under the lock, none fails."""
    errors: list[BaseException] = []
    databases = [AppDatabase(url=database_url) for _ in range(4)]
    barrier = threading.Barrier(len(databases))

    def migrate(database: AppDatabase) -> None:
        barrier.wait(timeout=30)
        try:
            database.migrate()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=migrate, args=(d,)) for d in databases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert {d.schema_revision() for d in databases} == {head_revision()}
    for database in databases:
        database.engine().dispose()


# --- usage ------------------------------------------------------------------------------------------------


def test_usage_is_one_row_per_run_family_and_kind(db):
    items = [UsageItem("ai_input_tokens", 120, {"model": "m"}), UsageItem("ai_output_tokens", 80)]
    assert db.record_usage("u1", "run-a", "content_workflow", items, occurred_at=at(3)) == 2
    # The same run family again (a retried step, a re-execution): nothing added, nothing changed.
    again = [UsageItem("ai_input_tokens", 999), UsageItem("emails_sent", 1), UsageItem("ai_images", 0)]
    assert db.record_usage("u1", "run-a", "content_workflow", again, occurred_at=at(4)) == 1

    rows = {row.kind: row for row in db.usage_for("u1")}
    assert set(rows) == {"ai_input_tokens", "ai_output_tokens", "emails_sent"}  # zero quantities skipped
    tokens = rows["ai_input_tokens"]
    assert (tokens.quantity, tokens.unit, tokens.run_id, tokens.job_name) == (
        120,
        "token",
        "run-a",
        "content_workflow",
    )
    assert tokens.detail == {"model": "m"} and tokens.occurred_at == at(3)
    assert rows["emails_sent"].unit == "email"


def test_usage_is_read_back_by_user_and_month(db):
    db.record_usage("u1", "r1", "video_pipeline", [UsageItem("video_transcoded", 61)], occurred_at=at(1, 0))
    db.record_usage("u1", "r2", "video_pipeline", [UsageItem("video_transcoded", 30)], occurred_at=at(31, 23))
    db.record_usage(
        "u1",
        "r3",
        "video_pipeline",
        [UsageItem("video_transcoded", 5)],
        occurred_at=at(31) + dt.timedelta(days=1),
    )
    db.record_usage("u2", "r4", "video_pipeline", [UsageItem("video_transcoded", 7)], occurred_at=at(2))

    march = db.usage_for("u1", start=at(1, 0), end=dt.datetime(2026, 4, 1, tzinfo=dt.UTC))

    assert [(row.run_id, row.quantity) for row in march] == [("r1", 61), ("r2", 30)]
    assert all(row.occurred_at.tzinfo == dt.UTC for row in march)


def test_usage_rules(db):
    with pytest.raises(ValueError, match="usage kind: 'tokens' is not one of"):
        UsageItem("tokens", 1)
    with pytest.raises(ValueError, match="must not be negative"):
        UsageItem("emails_sent", -1)
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        db.record_usage("u1", "r1", "j", [UsageItem("emails_sent", 1)], occurred_at=dt.datetime(2026, 1, 1))


# --- users, articles, payments ----------------------------------------------------------------------------


def test_users_are_created_on_first_sight_and_keep_their_email(db):
    db.ensure_user("u1")
    assert db.user_email("u1") is None
    db.ensure_user("u1", "old@example.com")
    db.ensure_user("u1")  # a pipeline that does not know the email leaves it alone
    assert db.user_email("u1") == "old@example.com"
    db.ensure_user("u1", "new@example.com")
    assert db.user_email("u1") == "new@example.com"


def article(run_id: str, **changes) -> Article:
    values = dict(id=f"art_{run_id}", user_id="u1", run_id=run_id, topic="Tides", keywords=["moon", "sea"],
                  title="Why tides turn", content="# Tides\n\nThe moon pulls.", meta_description="Tides.",
                  markdown_key=f"articles/u1/art_{run_id}.md", image_key=f"images/u1/art_{run_id}.png",
                  model="gpt-4o-mini")  # fmt: skip
    return Article(**(values | changes))


def test_an_article_is_saved_once_per_run_family(db):
    first = article("r1")
    assert db.save_article(first) == "art_r1"
    assert db.save_article(article("r1", title="A retry's title")) == "art_r1"

    stored = db.get_article("art_r1")
    assert stored is not None
    assert stored.title == "Why tides turn" and stored.keywords == ["moon", "sea"]
    assert stored.created_at == first.created_at.replace(microsecond=stored.created_at.microsecond)
    assert db.get_article("art_missing") is None
    assert db.user_email("u1") is None  # the user row exists (foreign key) without an email


def test_foreign_keys_are_enforced(db):
    with db.engine().begin() as connection, pytest.raises(sa.exc.IntegrityError):
        connection.execute(
            sa.insert(metadata.tables["usage"]).values(
                user_id="nobody", kind="emails_sent", quantity=1, unit="email", occurred_at=at(1),
                run_id="r", job_name="j",
            )
        )  # fmt: skip


def test_a_payment_is_inserted_then_updated_by_its_provider_id(db):
    pending = Payment(id="pi_123", provider="stripe", amount=1999, currency="usd", status="processing",
                      occurred_at=at(5), user_id="u9", description="Pro plan",
                      data={"invoice": "in_1"})  # fmt: skip
    db.record_payment(pending)
    db.record_payment(Payment(id="pi_123", provider="stripe", amount=1999, currency="usd",
                              status="succeeded", occurred_at=at(5)))  # fmt: skip

    stored = db.get_payment("pi_123")
    assert stored is not None
    assert stored.status == "succeeded"
    # What the second report left out is kept from the first.
    assert (stored.user_id, stored.description, stored.data) == ("u9", "Pro plan", {"invoice": "in_1"})
    assert stored.occurred_at == at(5)


# --- DATABASE_URL -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgres://postgres.abc:pw@aws-0-eu-central-1.pooler.supabase.com:6543/postgres",
         "postgresql+psycopg2://postgres.abc:pw@aws-0-eu-central-1.pooler.supabase.com:6543/postgres"),
        ("postgresql://u:pw@db.abc.supabase.co:5432/postgres?sslmode=require",
         "postgresql+psycopg2://u:pw@db.abc.supabase.co:5432/postgres?sslmode=require"),
        ("postgresql+psycopg2://u@h/d", "postgresql+psycopg2://u@h/d"),
        ("sqlite:////var/lib/offload/app.db", "sqlite:////var/lib/offload/app.db"),
    ],
)  # fmt: skip
def test_database_url_forms(given, used):
    assert normalize_url(given) == used


@pytest.mark.parametrize("url", ["mysql://u:secret@h/d", "not a url"])
def test_unsupported_database_url_names_the_variable_without_the_password(url):
    with pytest.raises(ConfigurationError) as caught:
        normalize_url(url)
    assert str(caught.value).startswith("DATABASE_URL: scheme ") and "secret" not in str(caught.value)


def test_the_embedded_default_creates_its_sqlite_file(tmp_path):
    path = tmp_path / "nested" / f"{uuid.uuid4().hex}.db"
    database = AppDatabase(url=f"sqlite:///{path}")
    database.migrate()
    assert path.is_file()
    database.engine().dispose()
