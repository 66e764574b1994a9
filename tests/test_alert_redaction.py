"""The ops alert never carries a secret, even one an upstream server sent back encoded.

A hostile endpoint echoed the API key in base64 inside its error text; the step's error reached the event
log and the Slack alert. Here a real run fails with such a text, and ``ops_failure_alert`` (ticked as the
daemon would) posts to the offline outbox: the key is masked in every form."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import dagster as dg
import pytest

from resources.email import OutboxEmail
from resources.slack import OutboxSlack
from sensors.failure_alerts import ops_failure_alert

KEY = "sk-alert-Redaction-41c9e07b"


@dg.op
def call_upstream() -> None:
    echoed = base64.b64encode(f"Incorrect API key provided: {KEY}".encode()).decode()
    raise RuntimeError(f"upstream answered 401: {echoed} (hex {KEY.encode().hex()}, {KEY.lower()})")


@dg.job
def echoing_upstream() -> None:
    call_upstream()


def test_an_encoded_secret_in_a_step_error_is_masked_in_the_alert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OFFLOAD_ALERT_EMAIL", raising=False)
    (tmp_path / "home").mkdir()
    resources = {
        "slack": OutboxSlack(directory=str(tmp_path / "slack")),
        "email": OutboxEmail(directory=str(tmp_path / "mail")),
    }
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        context = dg.build_sensor_context(instance=instance, resources=resources)
        cursor = ops_failure_alert.evaluate_tick(context).cursor  # the first tick only sets the cursor
        assert not echoing_upstream.execute_in_process(instance=instance, raise_on_error=False).success
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
        ops_failure_alert.evaluate_tick(context)

    [posted] = (tmp_path / "slack").glob("*.json")
    message = json.loads(posted.read_text())
    text = message["text"] + json.dumps(message["blocks"])
    assert "call_upstream: " in message["text"] and "***" in message["text"]
    assert "upstream answered 401" in message["text"]  # the error is there; the key in no form
    for form in (KEY, KEY.lower(), KEY.encode().hex()):
        assert form not in text
    assert KEY.encode() not in decoded_words(message["text"])  # nor base64 that decodes to it


def decoded_words(text: str) -> bytes:
    """Every word of ``text`` that decodes as base64, decoded."""
    found = []
    for word in text.replace(":", " ").split():
        try:
            found.append(base64.b64decode(word + "=" * (-len(word) % 4), validate=True))
        except ValueError:
            continue
    return b"\n".join(found)
