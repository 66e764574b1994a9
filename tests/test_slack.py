"""``resources/slack.py``: ``SlackAPI`` through the real slack-sdk against a fake Slack Web API on loopback
(message, blocks, channel, bot token; refusals as one-line errors without the token), and ``OutboxSlack``,
the offline default, writing each message as a JSON file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from resources.slack import DEFAULT_CHANNEL, OutboxSlack, SlackAPI, SlackSendError
from tests.support.slack_server import FakeSlack, fake_slack_server

TOKEN = "xoxb-test-0123456789-abcdef"
BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hello*"}}]


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with fake_slack_server() as fake:
        yield fake


def test_slack_api_posts_through_the_sdk(slack: FakeSlack) -> None:
    api = SlackAPI(token=TOKEN, base_url=slack.url, default_channel="#ops")
    ts = api.post(None, "hello", BLOCKS)
    [request] = slack.requests
    assert request.path == "/api/chat.postMessage"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.body == {"channel": "#ops", "text": "hello", "blocks": BLOCKS}
    assert float(ts) > 0
    api.post("#elsewhere", "plain")
    assert slack.messages[-1] == {"channel": "#elsewhere", "text": "plain"}


def test_slack_api_base_url_without_trailing_slash(slack: FakeSlack) -> None:
    SlackAPI(token=TOKEN, base_url=slack.url.rstrip("/")).post(None, "hi")
    assert slack.messages == [{"channel": DEFAULT_CHANNEL, "text": "hi"}]


@pytest.mark.parametrize(
    ("answer", "message", "retryable"),
    [
        ((200, {"ok": False, "error": "invalid_auth"}), "HTTP 200 (invalid_auth)", False),
        ((200, {"ok": False, "error": "channel_not_found"}), "HTTP 200 (channel_not_found)", False),
        ((500, {"ok": False, "error": "fatal_error"}), "HTTP 500 (fatal_error)", True),
    ],
)
def test_slack_api_refusals_are_one_line_without_the_token(
    slack: FakeSlack, answer: tuple[int, dict], message: str, retryable: bool
) -> None:
    slack.fail_next.append(answer)
    with pytest.raises(SlackSendError) as caught:
        SlackAPI(token=TOKEN, base_url=slack.url).post(None, "hi")
    assert str(caught.value) == f"slack: chat.postMessage failed with {message}"
    assert caught.value.retryable is retryable
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert TOKEN not in str(caught.value)


def test_slack_api_unreachable_is_retryable() -> None:
    import socket

    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]
    api = SlackAPI(token=TOKEN, base_url=f"http://127.0.0.1:{port}/api/", timeout_seconds=2)
    with pytest.raises(
        SlackSendError, match=r"^slack: could not reach http://127\.0\.0\.1:\d+/api/"
    ) as caught:
        api.post(None, "hi")
    assert caught.value.retryable


def test_outbox_writes_one_json_file_per_message(tmp_path: Path) -> None:
    outbox = OutboxSlack(directory=str(tmp_path / "slack"))
    first = outbox.post(None, "first", BLOCKS)
    second = outbox.post("#other", "second")
    files = sorted((tmp_path / "slack").glob("*.json"))
    assert len(files) == 2
    messages = [json.loads(path.read_text()) for path in files]
    assert messages[0] == {"channel": DEFAULT_CHANNEL, "ts": first, "text": "first", "blocks": BLOCKS}
    assert messages[1] == {"channel": "#other", "ts": second, "text": "second"}
    assert not list((tmp_path / "slack").glob("*.partial"))
