"""The ``send_email`` job: to the outbox (an .eml a mail client opens) and through the real resend SDK to a
fake Resend API on 127.0.0.1 (request body, auth header and idempotency key asserted; a 500 retried by the
step with the same key; a 422 failing at once); its result; the email billed to the user once; and its
payload rules, one line per bad field."""

import datetime as dt
import email
import email.policy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import resend
from pydantic import ValidationError

from offload import paths
from offload.payload import payload_errors
from pipelines.email import send_email
from pipelines.email.payload import SendEmailPayload
from resources.database import AppDatabase
from resources.email import OutboxEmail, ResendEmail
from tests.support.resend_server import FakeResend, fake_resend_server
from tests.support.runs import failure_text

PAYLOAD = {"to": "ada@example.com", "subject": "Your report", "html": "<p>Ready.</p>"}
API_KEY = "re_test_send_email_0123456789"


@pytest.fixture(scope="module")
def resend_server() -> Iterator[FakeResend]:
    with fake_resend_server() as fake:
        yield fake


@pytest.fixture
def resend_api(resend_server, monkeypatch) -> FakeResend:
    monkeypatch.setenv("RESEND_API_URL", resend_server.url)
    monkeypatch.setattr(resend, "api_key", None)
    with resend_server.lock:
        resend_server.requests.clear()
        resend_server.fail_next.clear()
        resend_server.ids_by_key.clear()
    return resend_server


def database(data: Path) -> AppDatabase:
    return AppDatabase(url=f"sqlite:///{data / 'app.db'}")


def outbox_resources(data: Path) -> dict[str, Any]:
    return {"email": OutboxEmail(directory=str(data / "outbox")), "database": database(data)}


def resend_resources(data: Path) -> dict[str, Any]:
    return {"email": ResendEmail(api_key=API_KEY, from_address="Offload <noreply@offload.test>"),
            "database": database(data)}  # fmt: skip


def test_send_email_to_the_outbox(data_dir):
    result = send_email.execute_in_process(
        run_config=PAYLOAD | {"from": "Acme Reports <reports@example.com>", "user_id": "u1"},
        resources=outbox_resources(data_dir),
    )

    out = result.output_for_node("send")
    assert set(out) == {"email_id", "to", "sent_at"} and out["to"] == "ada@example.com"
    assert dt.datetime.fromisoformat(out["sent_at"]).tzinfo == dt.UTC
    [saved] = (data_dir / "outbox").glob("*.eml")
    assert saved.stem == out["email_id"]
    message = email.message_from_bytes(saved.read_bytes(), policy=email.policy.default)
    assert (message["To"], message["From"], message["Subject"]) == (
        "ada@example.com", "Acme Reports <reports@example.com>", "Your report")  # fmt: skip
    assert message.get_body(("html",)).get_content().strip() == "<p>Ready.</p>"
    [usage] = database(data_dir).usage_for("u1")
    assert (usage.kind, usage.quantity, usage.unit, usage.run_id) == (
        "emails_sent",
        1,
        "email",
        result.run_id,
    )


def test_send_email_through_resend_with_an_idempotency_key(resend_api, data_dir):
    result = send_email.execute_in_process(run_config=PAYLOAD, resources=resend_resources(data_dir))

    [request] = resend_api.requests
    assert (request.method, request.path) == ("POST", "/emails")
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["idempotency-key"] == f"send-email/{result.run_id}"
    assert request.body == {"from": "Offload <noreply@offload.test>", "to": ["ada@example.com"],
                            "subject": "Your report", "html": "<p>Ready.</p>",
                            "text": "Ready.\n"}  # the text part, from the HTML  # fmt: skip
    assert result.output_for_node("send")["email_id"] == resend_api.ids_by_key[f"send-email/{result.run_id}"]


def test_a_server_error_is_retried_with_the_same_key(resend_api, data_dir):
    resend_api.fail_next.append(
        (500, {"statusCode": 500, "name": "internal_server_error", "message": "down"})
    )
    instance = dg.DagsterInstance.ephemeral()

    result = send_email.execute_in_process(
        run_config=PAYLOAD | {"user_id": "u2"}, resources=resend_resources(data_dir), instance=instance
    )

    assert result.success
    keys = [r.headers["idempotency-key"] for r in resend_api.requests]
    assert keys == [f"send-email/{result.run_id}"] * 2
    retries = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
    assert len(retries) == 1
    assert [row.quantity for row in database(data_dir).usage_for("u2")] == [1]


def test_a_refused_email_fails_at_once_without_the_key_in_the_event_log(resend_api, data_dir):
    # A provider (or a proxy) that echoes the key back in its error message.
    resend_api.fail_next.append((422, {"statusCode": 422, "name": "validation_error", "message": API_KEY}))
    instance = dg.DagsterInstance.ephemeral()

    result = send_email.execute_in_process(
        run_config=PAYLOAD | {"user_id": "u3"},
        resources=resend_resources(data_dir),
        instance=instance,
        raise_on_error=False,
    )

    assert not result.success
    logged = "\n".join(dg.serialize_value(entry) for entry in instance.all_logs(result.run_id))
    assert "HTTP 422" in logged and API_KEY not in logged
    assert len(resend_api.requests) == 1  # no retry: the same request would be refused again
    assert "send_email: resend: send failed with HTTP 422" in failure_text(result)
    assert database(data_dir).usage_for("u3") == []


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("to", "ada", "must be an email address"),
        ("to", "ada@example.com, bob@example.com", "must be an email address"),
        ("from", "Acme <reports@example>", "must be an email address"),
        ("from", "Acme\r\nBcc: x@example.com <a@example.com>", "one address, one line"),
        ("subject", "Hi\r\nBcc: x@example.com", "must be one line"),
        ("subject", "", "must not be empty"),
        ("html", "  ", "must not be empty"),
        ("user_id", "a/b", "1-64 characters"),
    ],
)
def test_each_bad_field_is_one_line_naming_it(field, value, rule):
    with pytest.raises(ValidationError) as caught:
        SendEmailPayload(**(PAYLOAD | {field: value}))
    [line] = payload_errors(caught.value) or []
    assert line.startswith(f"{field} = ") and rule in line and "\n" not in line


def test_a_bad_address_starts_no_run(data_dir):
    instance = dg.DagsterInstance.ephemeral()
    with pytest.raises(dg.DagsterError) as caught:
        send_email.execute_in_process(
            run_config=PAYLOAD | {"to": "nobody"}, resources=outbox_resources(data_dir), instance=instance
        )
    [line] = payload_errors(caught.value) or []
    assert line.startswith("to = 'nobody': must be an email address")
    assert instance.get_runs() == [] and not (data_dir / "outbox").exists()


def test_example_payload_file_is_valid():
    import yaml

    data = yaml.safe_load((paths.PROJECT_ROOT / "examples" / "send_email.yaml").read_text())
    assert SendEmailPayload(**data).from_ == "Acme Reports <reports@example.com>"
