"""Posting to Slack: a local outbox of JSON files by default, Slack's Web API (slack-sdk) in production.

Both implement ``SlackNotifier.post(channel, text, blocks) -> str``: ``channel`` None means the resource's
``default_channel``; the return value is the message's ``ts`` (Slack's message id), or the outbox file's
id offline.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from offload.errors import configuration_checked, require_settings

DEFAULT_CHANNEL = "#offload-alerts"
SLACK_DEFAULT_API_URL = "https://slack.com/api/"


class SlackSendError(RuntimeError):
    """Slack refused the message or could not be reached; ``retryable``: whether trying again could help."""

    def __init__(self, message: str, *, retryable: bool):
        self.retryable = retryable
        super().__init__(message)


class SlackNotifier(dg.ConfigurableResource):
    """Posts one message to a Slack channel. Implementations: ``OutboxSlack``, ``SlackAPI``."""

    default_channel: str = Field(default=DEFAULT_CHANNEL, description="Channel when a post names none.")

    def post(self, channel: str | None, text: str, blocks: list[dict] | None = None) -> str:
        """Post ``text`` (and Block Kit ``blocks``, if any) to ``channel``; return the message's id."""
        raise NotImplementedError


class OutboxSlack(SlackNotifier):
    """Writes each message to ``directory`` as a JSON file, named by time so a listing reads in order."""

    directory: str = Field(description="Outbox directory; created on first post.")

    def post(self, channel: str | None, text: str, blocks: list[dict] | None = None) -> str:
        outbox = Path(self.directory)
        outbox.mkdir(parents=True, exist_ok=True)
        ts = f"{time.time():.6f}"
        message: dict[str, Any] = {"channel": channel or self.default_channel, "ts": ts, "text": text}
        if blocks:
            message["blocks"] = blocks
        path = outbox / f"{ts}-{uuid.uuid4().hex[:8]}.json"
        # Write aside and rename: a reader (or a crash) never sees half a file under the final name.
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(message, indent=2, ensure_ascii=False))
        partial.replace(path)
        return ts


class SlackAPI(SlackNotifier):
    """``chat.postMessage`` through Slack's official SDK, as a bot (token ``xoxb-...``).

    ``base_url`` is Slack's Web API unless set (a proxy, or a local server in tests). The SDK retries a
    dropped connection and a 429 (after its ``Retry-After``) itself, twice each.
    """

    token: str = Field(description="Bot token (bind with dg.EnvVar('SLACK_BOT_TOKEN')).")
    base_url: str = Field(default=SLACK_DEFAULT_API_URL, description="Slack Web API base URL.")
    timeout_seconds: int = Field(default=10, description="Timeout of each request to Slack.")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        with configuration_checked(context):
            require_settings(self, {"token": "SLACK_BOT_TOKEN"})

    def post(self, channel: str | None, text: str, blocks: list[dict] | None = None) -> str:
        from slack_sdk import WebClient
        from slack_sdk.errors import SlackApiError
        from slack_sdk.http_retry.builtin_handlers import (
            ConnectionErrorRetryHandler,
            RateLimitErrorRetryHandler,
        )

        client = WebClient(
            token=self.token,
            base_url=self.base_url if self.base_url.endswith("/") else f"{self.base_url}/",
            timeout=self.timeout_seconds,
            retry_handlers=[ConnectionErrorRetryHandler(max_retry_count=2), RateLimitErrorRetryHandler(2)],
        )
        try:
            response = client.chat_postMessage(
                channel=channel or self.default_channel, text=text, blocks=blocks
            )
            return str(response["ts"])
        except SlackApiError as error:
            status = error.response.status_code
            code = error.response.get("error", "unknown_error")
            failure = SlackSendError(
                f"slack: chat.postMessage failed with HTTP {status} ({code})",
                retryable=status == 429 or status >= 500,
            )
        except OSError as error:  # URLError, timeouts, refused connections
            failure = SlackSendError(f"slack: could not reach {self.base_url} ({error})", retryable=True)
        # Raised outside the except block so the SDK's exception (which carries the request) is not chained.
        raise self._redacted(failure)

    def _redacted(self, error: SlackSendError) -> SlackSendError:
        if self.token and self.token in str(error):
            return SlackSendError(str(error).replace(self.token, "***"), retryable=error.retryable)
        return error
