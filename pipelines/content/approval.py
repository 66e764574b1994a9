"""``publish_article``: a human approves an article before it is published (Trigger.dev's ``wait.forToken``).

``{article_key, title, editor_email, timeout_seconds}``: ``request_approval`` creates a wait token and emails
the editor two links to its URL on the webhook gateway (approve; reject with a reason). ``await_decision``
waits for the token (offload.wait.for_token): the run holds no worker and no slot meanwhile, for up to
``timeout_seconds`` (default 7 days). ``act`` then publishes the article (approve), stores the editor's
reason (reject), or tells ops on Slack that nobody decided (timeout). Each is its own step, so resuming
never sends the email again.
"""

import json
import re
import tempfile
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dagster as dg
from pydantic import Field, field_validator

from offload import wait
from offload.log import StepLog
from offload.payload import check_email, payload_mapping
from offload.result import job_result
from offload.runtime.concurrency import Queue
from resources.email import Email, EmailSender
from resources.slack import SlackNotifier
from resources.storage import Storage, key_problem

QUEUE = Queue("approvals")
DEFAULT_TIMEOUT_SECONDS = 7 * 86400
MAX_TIMEOUT_SECONDS = 30 * 86400


class PublishPayload(dg.Config):
    article_key: str = Field(description="Storage key of the article draft (e.g. content_workflow's).")
    title: str = Field(description="The article's title, 1-200 characters, for the email.")
    editor_email: str = Field(description="Who approves or rejects it.")
    timeout_seconds: float = Field(
        default=DEFAULT_TIMEOUT_SECONDS,
        description=f"How long to wait for a decision, 5-{MAX_TIMEOUT_SECONDS}.",
    )

    @field_validator("article_key")
    @classmethod
    def _key(cls, value: str) -> str:
        problem = key_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        if not value.strip() or len(value) > 200:
            raise ValueError("must be 1-200 characters, not only spaces")
        return value.strip()

    @field_validator("editor_email")
    @classmethod
    def _email(cls, value: str) -> str:
        return check_email(value)

    @field_validator("timeout_seconds")
    @classmethod
    def _timeout(cls, value: float) -> float:
        if not 5 <= value <= MAX_TIMEOUT_SECONDS:
            raise ValueError(f"must be 5-{MAX_TIMEOUT_SECONDS}")
        return value


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:80] or "article"


@dg.op
def request_approval(
    context: dg.OpExecutionContext, config: PublishPayload, storage: Storage, email: EmailSender
) -> str:
    """Create the token and email the editor its approve / reject links; return the token's id."""
    if not storage.exists(config.article_key):
        raise dg.Failure(description=f"article_key: no object {config.article_key!r} in storage")
    token = wait.create_token(context, timeout=config.timeout_seconds, tags={"job": "publish_article"})
    approve, reject = f"{token.url}?decision=approve", f"{token.url}?decision=reject&reason="
    draft = storage.url(config.article_key)
    html = (
        f'<p>Please review <b>{escape(config.title)}</b>: <a href="{escape(draft)}">read the draft</a>.</p>'
        f'<p><a href="{escape(approve)}">Approve</a> &middot; <a href="{escape(reject)}">Reject</a></p>'
    )
    text = f"Please review {config.title}: {draft}\nApprove: {approve}\nReject: {reject}"
    message = Email(
        to=config.editor_email, subject=f"Approve for publishing: {config.title}", html=html, text=text
    )
    email.send(message, idempotency_key=f"approval/{quote(token.id)}")
    StepLog(context).info("approval requested", {"token": token.id, "editor": config.editor_email})
    return token.id


@dg.op
def await_decision(context: dg.OpExecutionContext, config: PublishPayload, token_id: str) -> dict[str, Any]:
    """Wait for the editor (a durable wait: no worker, no slot), at most ``timeout_seconds``."""
    result = wait.for_token(context, token_id, timeout=config.timeout_seconds)
    data = result.data if isinstance(result.data, dict) else {}
    decision = "timeout" if result.timed_out else str(data.get("decision", "")).lower()
    if decision not in ("approve", "reject", "timeout"):
        raise dg.Failure(description=f"decision: {decision!r} must be approve or reject")
    return {"decision": decision, "reason": str(data.get("reason", ""))[:2000]}


@dg.op
def act(
    context: dg.OpExecutionContext,
    config: PublishPayload,
    decision: dict[str, Any],
    storage: Storage,
    slack: SlackNotifier,
) -> dg.Output[dict[str, Any]]:
    """Publish (approve), store the reason (reject), or tell ops nobody decided (timeout)."""
    name = slug(config.title)
    result: dict[str, Any] = {"decision": decision["decision"]}
    with tempfile.TemporaryDirectory() as scratch:
        if decision["decision"] == "approve":
            draft = storage.get_file(config.article_key, Path(scratch) / "article")
            stored = storage.put_file(f"published/{name}.md", draft, "text/markdown")
            result["published"] = stored.url
        elif decision["decision"] == "reject":
            path = Path(scratch) / "rejection.json"
            path.write_text(json.dumps({"title": config.title, "reason": decision["reason"]}))
            storage.put_file(f"rejected/{name}.json", path, "application/json")
            result["reason"] = decision["reason"]
        else:
            slack.post(None, f"Nobody approved or rejected '{config.title}' in time ({config.editor_email}).")
            result["notified"] = "ops"
    StepLog(context).info("decision applied", result)
    return job_result(result)


@dg.job(
    description="Email an editor approve / reject links, wait for the decision; publish, or store why not.",
    config=payload_mapping(
        PublishPayload,
        lambda p: {
            "ops": {
                name: {"config": p.model_dump()} for name in ("request_approval", "await_decision", "act")
            }
        },
    ),
    tags=QUEUE.job_tags(),
)
def publish_article() -> None:
    act(await_decision(request_approval()))
