"""``welcome_user``: a parent job whose step runs child jobs and waits for their outputs.

``{user_id, email, name}``: ``hello_world`` makes the greeting while ``typed_task`` stores the user's
record (both child runs at once, ``offload.client.children.run_children``); the result holds both outputs.
Each
child is a run of its own in the UI, in its own queue (``typed_task``: one run per user), on the next
nesting level, so parents waiting for their children never deadlock the run queue. While the children
run, the parent waits durably (offload.wait.for_runs): its worker exits and it holds no slot; it resumes
when both are final and returns their outputs.
"""

from typing import Any

import dagster as dg
from pydantic import Field, field_validator

from offload.client.children import run_children
from offload.keys import id_rule
from offload.payload import check_email, payload_mapping
from offload.result import job_result
from offload.runtime.concurrency import Queue

QUEUE = Queue("onboarding")


class WelcomePayload(dg.Config):
    user_id: str = Field(description="1-64 of A-Z a-z 0-9 _ -.")
    email: str = Field(description="The new user's email address.")
    name: str = Field(description="How to greet them.")

    @field_validator("user_id")
    @classmethod
    def _user_id(cls, value: str) -> str:
        return id_rule(value)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return check_email(value)


@dg.op
def welcome(context: dg.OpExecutionContext, config: WelcomePayload) -> dg.Output[dict[str, Any]]:
    """Greet the user and store their record: two child runs, waited for together."""
    profile = {"user_id": config.user_id, "email": config.email, "data": {"name": config.name}}
    hello, record = run_children(context, [("hello_world", {"name": config.name}), ("typed_task", profile)])
    return job_result({"greeting": hello["message"], "record": record["record"]})


@dg.job(
    description="Welcome a new user: greet them (hello_world) and store their record (typed_task).",
    config=payload_mapping(
        WelcomePayload, lambda payload: {"ops": {"welcome": {"config": payload.model_dump()}}}
    ),
    tags=QUEUE.job_tags(),
)
def welcome_user() -> None:
    welcome()
