"""``send_email``: one email through the deployment's sender (the outbox locally, Resend in production).

The send carries an idempotency key made from the run family, so a retried step, or the whole run
re-executed, delivers the email once. A provider error that trying again could fix (rate limit, 5xx,
no answer) is retried by the step's retry policy, with the same key; any other fails at once.
"""

import datetime as dt
from typing import Any

import dagster as dg

from offload.errors import AbortTaskRunError
from offload.log import StepLog
from offload.payload import payload_mapping
from offload.result import job_result
from offload.runtime.concurrency import Queue
from pipelines.email.payload import SendEmailPayload
from pipelines.usage import record_usage, run_family_id
from resources.database import AppDatabase, UsageItem
from resources.email import Email, EmailSender, EmailSendError

# Waits of 1, 3 and 7 s (Dagster's exponential backoff is (2**n - 1) * delay), each +- up to 100%.
RETRY = dg.RetryPolicy(max_retries=3, delay=1, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


QUEUE = Queue("email")


@dg.op(retry_policy=RETRY)
def send(
    context: dg.OpExecutionContext, config: SendEmailPayload, email: EmailSender, database: AppDatabase
) -> dg.Output[dict[str, Any]]:
    """Send the email once per run family and return ``{email_id, to, sent_at}``."""
    message = Email(to=config.to, subject=config.subject, html=config.html, from_address=config.from_)
    try:
        email_id = email.send(message, idempotency_key=f"send-email/{run_family_id(context)}")
    except EmailSendError as error:
        if not error.retryable:
            raise AbortTaskRunError(f"send_email: {error}") from None
        StepLog(context).warning(
            "send failed; retrying", {"status": error.status, "attempt": context.retry_number}
        )
        raise
    result = {"email_id": email_id, "to": config.to, "sent_at": dt.datetime.now(dt.UTC).isoformat()}
    record_usage(context, database, config.user_id, [UsageItem("emails_sent", 1)])
    StepLog(context).info("email sent", result)
    return job_result(result, metadata={"email_id": email_id, "to": config.to, "subject": config.subject})


def _run_config(payload: SendEmailPayload) -> dict[str, Any]:
    # by_alias: the op's config takes "from", as the payload does
    return {"ops": {"send": {"config": payload.model_dump(by_alias=True)}}}


@dg.job(
    description="Send one email (validated addresses, retried, delivered once per run family).",
    config=payload_mapping(SendEmailPayload, _run_config),
    tags={"offload/kind": "email", **QUEUE.job_tags()},
)
def send_email() -> None:
    send()
