"""``invoicing`` (the ``monthly_invoicing`` job) on SQLite and on the real PostgreSQL of this machine, with
usage seeded around a month's edges: one invoice per user with the month's usage priced per minute, per
thousand tokens and per item (payload prices over the defaults, lines rounded half up), stored in the
``invoices`` table and as an HTML document, emailed to each user with an address; run twice for the same
month, it creates no second invoice, document or email; a run whose emails fail midway sends the rest on
the next run and never one twice; the pricing helper is exact."""

import datetime as dt
import email
import email.policy
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from benchmarks.support.postgres import temporary_database
from pipelines.invoicing import invoicing
from pipelines.invoicing.documents import counted, invoice_html, invoice_text, line_texts
from pipelines.invoicing.prices import effective_prices, invoice_lines
from resources.database import AppDatabase, Invoice, UsageItem
from resources.database.schema import invoices
from resources.email import Email, EmailSendError, OutboxEmail
from resources.storage import LocalStorage
from tests.support.runs import failure_text, output_metadata

UTC = dt.UTC
PAYLOAD = {
    "timestamp": "2026-03-01T00:00:00+00:00",
    "last_timestamp": "2026-02-01T00:00:00+00:00",
    "prices": {"video_transcoded": 10, "emails_sent": 1, "ai_images": 25},
}


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path: Path) -> Iterator[AppDatabase]:
    if request.param == "sqlite":
        db = AppDatabase(url=f"sqlite:///{tmp_path / 'app.db'}")
        db.migrate()
        yield db
        db.engine().dispose()
    else:
        with temporary_database("offload_invoicing_test") as url:
            db = AppDatabase(url=url)
            db.migrate()
            yield db
            db.engine().dispose()


def use(
    db: AppDatabase, user_id: str, when: dt.datetime, *items: UsageItem, email: str | None = None
) -> None:
    db.record_usage(user_id, f"run-{user_id}-{when.timestamp()}", "job", items, email=email, occurred_at=when)


@pytest.fixture
def seeded(database: AppDatabase) -> AppDatabase:
    feb = dt.datetime(2026, 2, 10, 12, tzinfo=UTC)
    use(
        database,
        "u1",
        feb,
        UsageItem("video_transcoded", 95),
        UsageItem("emails_sent", 2),
        email="u1@example.com",
    )
    use(database, "u1", dt.datetime(2026, 2, 1, tzinfo=UTC), UsageItem("video_transcoded", 150),
        UsageItem("emails_sent", 1), UsageItem("ai_input_tokens", 12_000))  # fmt: skip
    use(
        database, "u1", dt.datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC), UsageItem("emails_sent", 50)
    )  # January
    use(database, "u1", dt.datetime(2026, 3, 1, tzinfo=UTC), UsageItem("emails_sent", 70))  # March
    use(
        database,
        "u2",
        feb,
        UsageItem("ai_images", 2),
        UsageItem("ai_output_tokens", 2_500),
        email="u2@example.com",
    )
    use(
        database, "u3", dt.datetime(2026, 2, 28, 23, 59, tzinfo=UTC), UsageItem("emails_sent", 1)
    )  # no address
    use(
        database,
        "u4",
        dt.datetime(2026, 3, 2, tzinfo=UTC),
        UsageItem("emails_sent", 9),
        email="u4@example.com",
    )
    return database


class RefusingOutbox(OutboxEmail):
    """The outbox, except that the provider refuses mail to one address."""

    refuse: str = ""

    def send(self, message: Email, idempotency_key: str) -> str:
        if message.to == self.refuse:
            raise EmailSendError(
                "resend: send failed with HTTP 422 (validation_error)", status=422, retryable=False
            )
        return super().send(message, idempotency_key)


def run(db: AppDatabase, tmp_path: Path, refuse: str = ""):
    resources = {
        "database": db,
        "storage": LocalStorage(root=str(tmp_path / "storage")),
        "email": RefusingOutbox(directory=str(tmp_path / "outbox"), refuse=refuse),
    }
    return invoicing.execute_in_process(run_config=PAYLOAD, resources=resources, raise_on_error=False)


def outbox(tmp_path: Path) -> list[email.message.EmailMessage]:
    folder = tmp_path / "outbox"
    paths = sorted(folder.glob("*.eml")) if folder.exists() else []
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in paths]


def test_a_month_is_invoiced_once(seeded, tmp_path):
    first = run(seeded, tmp_path)

    assert first.success, failure_text(first)
    stored = {invoice.user_id: invoice for invoice in seeded.invoices_for_month("2026-02")}
    assert sorted(stored) == ["u1", "u2", "u3"]  # u4 used nothing in February
    u1 = stored["u1"]
    assert [
        (line.kind, line.quantity, line.billed_quantity, line.unit_price, line.amount) for line in u1.lines
    ] == [
        ("video_transcoded", 245, "4.083333333333333333333333333", "10", 41),  # 245 s = 4.08 min at 10
        ("ai_input_tokens", 12_000, "12", "0.05", 1),  # 0.6 rounds up
        ("emails_sent", 3, "3", "1", 3),
    ]
    assert (u1.total, u1.currency, u1.number) == (45, "usd", "INV-202602-u1")
    assert (u1.period_start, u1.period_end) == (
        dt.datetime(2026, 2, 1, tzinfo=UTC),
        dt.datetime(2026, 3, 1, tzinfo=UTC),
    )
    assert stored["u2"].total == 51  # 2 images at 25, 2.5K output tokens at 0.2 = 0.5 -> 1 (half up)
    assert stored["u3"].total == 1
    assert output_metadata(first, "bill_usage")["created"] == 3

    document = (tmp_path / "storage" / "invoices/u1/2026-02.html").read_text()
    assert "INV-202602-u1" in document and "0.45" in document and "February 2026" in document
    assert "4.08 minutes" in document and "0.10 / minute" in document and "unit price (USD)" in document
    assert "4.0833" not in document and "minor units" not in document
    assert u1.document_key == "invoices/u1/2026-02.html"

    sent = outbox(tmp_path)
    assert sorted(str(m["To"]) for m in sent) == ["u1@example.com", "u2@example.com"]
    assert {str(m["Subject"]) for m in sent} == {
        "Your invoice INV-202602-u1: 0.45 USD",
        "Your invoice INV-202602-u2: 0.51 USD",
    }
    text = next(m for m in sent if str(m["To"]) == "u1@example.com").get_body(("plain",)).get_content()
    assert "video transcoded (245 seconds): 4.08 minutes at USD 0.10 / minute = USD 0.41" in text
    assert "Total: USD 0.45" in text
    assert stored["u1"].emailed_at is not None and stored["u3"].emailed_at is None
    assert output_metadata(first, "email_invoices")["no_address"] == 1

    second = run(seeded, tmp_path)

    assert second.success
    with seeded.engine().connect() as connection:
        assert connection.scalar(sa.select(sa.func.count()).select_from(invoices)) == 3
    assert output_metadata(second, "bill_usage")["created"] == 0
    assert output_metadata(second, "store_documents")["written"] == 0
    assert output_metadata(second, "email_invoices")["sent"] == 0
    assert len(outbox(tmp_path)) == 2
    assert seeded.get_invoice("u1", "2026-02") == u1  # untouched by the second run


def test_emails_that_fail_midway_are_sent_by_the_next_run_once(seeded, tmp_path):
    failed = run(seeded, tmp_path, refuse="u2@example.com")

    assert not failed.success
    assert "email_invoices: 1 not sent: INV-202602-u2: resend: send failed with HTTP 422" in failure_text(
        failed
    )
    assert [str(m["To"]) for m in outbox(tmp_path)] == ["u1@example.com"]

    retried = run(seeded, tmp_path)

    assert retried.success
    assert sorted(str(m["To"]) for m in outbox(tmp_path)) == ["u1@example.com", "u2@example.com"]
    assert output_metadata(retried, "email_invoices")["already_sent"] == 1


def test_an_invoice_keeps_what_it_billed(seeded, tmp_path):
    """A month is billed once: usage recorded late does not change a stored invoice."""
    assert run(seeded, tmp_path).success
    use(seeded, "u1", dt.datetime(2026, 2, 27, tzinfo=UTC), UsageItem("emails_sent", 100))

    assert run(seeded, tmp_path).success

    invoice = seeded.get_invoice("u1", "2026-02")
    assert isinstance(invoice, Invoice) and invoice.total == 45


@pytest.mark.parametrize(
    ("usage", "overrides", "amounts"),
    [
        ({"video_transcoded": 60}, {}, [2]),  # one minute at the default 2
        ({"video_transcoded": 90}, {"video_transcoded": 3}, [5]),  # 1.5 min x 3 = 4.5 -> 5
        ({"ai_input_tokens": 1_000, "ai_output_tokens": 1}, {}, [0, 0]),  # 0.05 and 0.0002 round to 0
        ({"emails_sent": 0, "ai_images": 3}, {"ai_images": 33.3}, [100]),  # 99.9 -> 100; zero kinds dropped
    ],
)
def test_prices(usage, overrides, amounts):
    lines = invoice_lines(usage, effective_prices(overrides))
    assert [line.amount for line in lines] == amounts
    assert effective_prices({"emails_sent": 0.25})["emails_sent"] == Decimal("0.25")


def test_an_invoice_reads_like_one():
    """Quantities rounded for people, units in the plural unless one, unit prices in the currency."""
    lines = invoice_lines(
        {"video_transcoded": 20, "ai_input_tokens": 12_000, "ai_output_tokens": 2_500, "emails_sent": 1},
        effective_prices({"video_transcoded": 10}),
    )
    invoice = Invoice(number="INV-202602-u9", user_id="u9", month="2026-02",
                      period_start=dt.datetime(2026, 2, 1, tzinfo=UTC),
                      period_end=dt.datetime(2026, 3, 1, tzinfo=UTC), currency="eur",
                      total=sum(line.amount for line in lines), lines=lines)  # fmt: skip

    assert [(t.usage, t.quantity, t.unit_price) for t in line_texts(invoice)] == [
        ("video transcoded (20 seconds)", "0.33 minutes", "0.10 / minute"),
        ("ai input tokens (12,000 tokens)", "12K tokens", "0.0005 / 1K tokens"),
        ("ai output tokens (2,500 tokens)", "2.5K tokens", "0.002 / 1K tokens"),
        ("emails sent (1 email)", "1 email", "0.001 / email"),
    ]
    html = invoice_html(invoice)
    assert "0.33 minutes" in html and "unit price (EUR)" in html and "0.3333" not in html
    assert "0.33 minutes at EUR 0.10 / minute = EUR 0.03" in invoice_text(invoice)
    assert counted(Decimal("0.001"), "minute") == "< 0.01 minutes"
    assert counted(1, "image") == "1 image"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prices": {"gold": 1}}, "'gold' is not one of video_transcoded"),
        ({"prices": {"emails_sent": -1}}, "emails_sent: must be a price of 0 or more"),
        ({"currency": "USD"}, "must be a 3-letter ISO 4217 code in lower case"),
    ],
)
def test_payload_rules(fields, message):
    from pipelines.invoicing.payload import InvoicingPayload

    with pytest.raises(ValueError, match=message):
        InvoicingPayload(timestamp=PAYLOAD["timestamp"], **fields)


def test_the_example_payload_from_the_cli(tmp_path):
    """``offload job execute -j invoicing -c examples/invoicing.yaml``, as docs/schedules.md says, on the
    embedded default: February 2026 is billed from the SQLite app database."""
    import subprocess

    from tests.test_cli import BIN, ROOT, cli_env

    (tmp_path / "home").mkdir()
    db = AppDatabase(url=f"sqlite:///{tmp_path / 'data' / 'offload.db'}")
    db.migrate()
    use(db, "u1", dt.datetime(2026, 2, 14, tzinfo=UTC), UsageItem("emails_sent", 10), email="u1@example.com")
    db.engine().dispose()

    done = subprocess.run(
        [BIN / "offload", "job", "execute", "-f", "definitions.py", "-j", "invoicing",
         "-c", "examples/invoicing.yaml"],
        cwd=ROOT, env=cli_env(tmp_path), capture_output=True, text=True, timeout=180,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr[-3000:]
    assert db.get_invoice("u1", "2026-02") is not None
    assert (tmp_path / "data" / "storage" / "invoices" / "u1" / "2026-02.html").is_file()
    assert len(list((tmp_path / "data" / "outbox").glob("*.eml"))) == 1
