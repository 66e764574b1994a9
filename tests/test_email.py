"""Email resources: ``OutboxEmail`` writing parseable ``.eml`` files once per idempotency key, and
``ResendEmail`` through the real resend SDK against a fake Resend API on 127.0.0.1 (headers, JSON body,
returned id, per-send ``RESEND_API_URL``, and errors that never show the API key).
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import resend

from resources.email import DEFAULT_FROM, Email, EmailSendError, OutboxEmail, ResendEmail, text_from_html
from tests.support.resend_server import FakeResend, fake_resend_server

API_KEY = "re_test_0123456789abcdef"


def parse_eml(path: Path) -> EmailMessage:
    with path.open("rb") as f:
        message = BytesParser(policy=default_policy).parse(f)
    assert isinstance(message, EmailMessage)
    return message


# --- OutboxEmail -----------------------------------------------------------------------------------------


def test_outbox_writes_a_parseable_eml(tmp_path: Path) -> None:
    outbox = OutboxEmail(directory=str(tmp_path / "outbox"))
    email = Email(
        to="ada@example.com", subject="Your video is ready", html="<p>Watch <b>it</b></p>", text="Watch it"
    )

    message_id = outbox.send(email, idempotency_key="video-ready:v1")

    files = list((tmp_path / "outbox").iterdir())
    assert [f.name for f in files] == [f"{message_id}.eml"]
    message = parse_eml(files[0])
    assert message["To"] == "ada@example.com"
    assert message["Subject"] == "Your video is ready"
    assert message["From"] == DEFAULT_FROM
    assert message["X-Idempotency-Key"] == "video-ready:v1"
    assert message_id in message["Message-ID"]
    assert parsedate_to_datetime(message["Date"]).tzinfo is not None
    assert message.get_content_type() == "multipart/alternative"
    html = message.get_body(preferencelist=("html",))
    assert html is not None and html.get_content_type() == "text/html"
    assert html.get_content().strip() == "<p>Watch <b>it</b></p>"
    plain = message.get_body(preferencelist=("plain",))
    assert plain is not None and plain.get_content().strip() == "Watch it"


def test_an_html_only_email_carries_its_links_in_the_text_part(tmp_path: Path) -> None:
    html = (
        '<p>Your video <b>intro</b> is ready.</p><ul><li><a href="https://cdn.test/v.mp4?X-Amz-Expires=60">'
        'mp4</a> (1,024 bytes)</li></ul><p><img src="https://cdn.test/t.jpg" alt="thumbnail">'
        '<img src="data:image/png;base64,AAAA" alt="inline"></p>'
    )
    outbox = OutboxEmail(directory=str(tmp_path / "outbox"))

    outbox.send(Email(to="ada@example.com", subject="Ready", html=html), idempotency_key="k1")

    [path] = (tmp_path / "outbox").iterdir()
    plain = parse_eml(path).get_body(preferencelist=("plain",))
    assert plain is not None
    assert plain.get_content() == (
        "Your video intro is ready.\n"
        "mp4 <https://cdn.test/v.mp4?X-Amz-Expires=60> (1,024 bytes)\n"
        "thumbnail <https://cdn.test/t.jpg>\n"
    )
    assert text_from_html('<a href="https://a.test/x">https://a.test/x</a>') == "<https://a.test/x>\n"


def test_outbox_uses_the_emails_own_sender(tmp_path: Path) -> None:
    outbox = OutboxEmail(directory=str(tmp_path), from_address="Default <default@example.com>")
    sent = Email(to="b@example.com", subject="s", html="<p>h</p>", from_address="Acme <hi@acme.test>")
    plain = Email(to="b@example.com", subject="s", html="<p>h</p>")
    own = parse_eml(tmp_path / f"{outbox.send(sent, 'k1')}.eml")
    fallback = parse_eml(tmp_path / f"{outbox.send(plain, 'k2')}.eml")
    assert own["From"] == "Acme <hi@acme.test>"
    assert fallback["From"] == "Default <default@example.com>"


def test_outbox_same_key_sends_once(tmp_path: Path) -> None:
    outbox = OutboxEmail(directory=str(tmp_path))
    first = outbox.send(Email(to="a@example.com", subject="first", html="<p>1</p>"), "run-42:notify")
    retry = outbox.send(Email(to="a@example.com", subject="second", html="<p>2</p>"), "run-42:notify")

    assert retry == first
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == [f"{first}.eml"]
    assert parse_eml(files[0])["Subject"] == "first"  # the retry did not overwrite the sent email


def test_outbox_different_keys_send_twice(tmp_path: Path) -> None:
    outbox = OutboxEmail(directory=str(tmp_path))
    email = Email(to="a@example.com", subject="hello", html="<p>hi</p>")
    one = outbox.send(email, "key-1")
    two = outbox.send(email, "key-2")
    assert one != two
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted([f"{one}.eml", f"{two}.eml"])


def test_outbox_refuses_header_injection_and_empty_key(tmp_path: Path) -> None:
    outbox = OutboxEmail(directory=str(tmp_path))
    with pytest.raises(ValueError):
        outbox.send(Email(to="a@example.com", subject="hi\r\nBcc: victim@example.com", html="x"), "k")
    with pytest.raises(ValueError, match="idempotency_key"):
        outbox.send(Email(to="a@example.com", subject="hi", html="x"), "")
    assert list(tmp_path.iterdir()) == [], "a refused email left a file behind"


# --- ResendEmail against a fake Resend API ---------------------------------------------------------------


@pytest.fixture(scope="module")
def resend_server() -> Iterator[FakeResend]:
    """The fake API on 127.0.0.1 (tests/support/resend_server.py), shared by this module's tests."""
    with fake_resend_server() as fake:
        yield fake


@pytest.fixture
def fake_resend(resend_server: FakeResend, monkeypatch: pytest.MonkeyPatch) -> FakeResend:
    """Point the resource at the fake API through ``RESEND_API_URL``, set only now (after the SDK was
    imported), and leave the SDK's globals as they were afterwards.

    ``resend.api_url`` is set to a closed loopback port: if the resource did not read ``RESEND_API_URL``
    per send, the SDK would use that, the test would fail, and nothing would leave this machine.
    """
    monkeypatch.setenv("RESEND_API_URL", resend_server.url)
    monkeypatch.setattr(resend, "api_url", "http://127.0.0.1:9")
    monkeypatch.setattr(resend, "api_key", None)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with resend_server.lock:
        resend_server.requests.clear()
        resend_server.fail_next.clear()
    return resend_server


def test_resend_sends_headers_and_body(fake_resend: FakeResend) -> None:
    sender = ResendEmail(api_key=API_KEY, from_address="Acme <noreply@acme.test>")
    email = Email(to="ada@example.com", subject="Your video is ready", html="<p>Done</p>", text="Done")

    message_id = sender.send(email, idempotency_key="video-ready:v1")

    assert len(fake_resend.requests) == 1
    request = fake_resend.requests[0]
    assert (request.method, request.path) == ("POST", "/emails")
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["idempotency-key"] == "video-ready:v1"
    assert request.body == {
        "from": "Acme <noreply@acme.test>",
        "to": ["ada@example.com"],
        "subject": "Your video is ready",
        "html": "<p>Done</p>",
        "text": "Done",
    }
    assert message_id == fake_resend.ids_by_key["video-ready:v1"]


def test_resend_sender_override_and_idempotent_retry(fake_resend: FakeResend) -> None:
    sender = ResendEmail(api_key=API_KEY, from_address="Acme <noreply@acme.test>")
    email = Email(to="b@example.com", subject="s", html="<p>h</p>", from_address="Ops <ops@acme.test>")

    first = sender.send(email, idempotency_key="k-1")
    retry = sender.send(email, idempotency_key="k-1")
    other = sender.send(email, idempotency_key="k-2")

    assert first == retry != other
    assert [r.headers["idempotency-key"] for r in fake_resend.requests] == ["k-1", "k-1", "k-2"]
    assert fake_resend.requests[0].body["from"] == "Ops <ops@acme.test>"
    assert fake_resend.requests[0].body["text"] == "h\n"  # no text part given: the HTML's text is sent


@pytest.mark.parametrize(
    ("status", "name", "retryable"),
    [(403, "invalid_api_key", False), (422, "validation_error", False), (429, "rate_limit_exceeded", True)],
)
def test_resend_error_surfaces_without_the_api_key(
    fake_resend: FakeResend, status: int, name: str, retryable: bool
) -> None:
    # The server echoes the key back, as a misconfigured proxy might: the resource must still not show it.
    fake_resend.fail_next.append(
        (status, {"statusCode": status, "name": name, "message": f"Refused for Bearer {API_KEY}: domain"})
    )
    sender = ResendEmail(api_key=API_KEY, from_address="Acme <noreply@acme.test>")

    with pytest.raises(EmailSendError) as raised:
        sender.send(Email(to="a@example.com", subject="s", html="<p>h</p>"), idempotency_key="k-err")

    error = raised.value
    assert error.status == status
    assert error.retryable is retryable
    # Status and error type only: the server's message (here echoing the key) is never repeated.
    assert str(error) == f"resend: send failed with HTTP {status} ({name})"
    shown = "".join(traceback.format_exception(error)) + repr(error) + repr(error.args)
    assert API_KEY not in shown
    assert error.__cause__ is None and error.__context__ is None  # no chained SDK error carrying the text
    assert len(fake_resend.requests) == 1  # it did reach the fake server
