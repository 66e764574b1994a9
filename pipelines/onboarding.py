"""``welcome_user``: a parent job made of child runs (``offload.children.run_child``).

``{user_id, email, name}``: ``hello_world`` makes the greeting, then ``typed_task`` stores the user's record
with it; the result holds both children's outputs. Each child is a run of its own in the UI, with its own
queue (``typed_task``: one run per user) on the next nesting level, so parents waiting for their children
never deadlock the run queue.
"""

from typing import Any

import dagster as dg
from pydantic import Field, field_validator

from offload.children import run_child
from offload.concurrency import Queue
from offload.keys import ID_RULE, is_valid_id
from offload.payload import check_email, payload_mapping
from offload.result import job_result

QUEUE = Queue("onboarding")


class WelcomePayload(dg.Config):
    user_id: str = Field(description="1-64 of A-Z a-z 0-9 _ -.")
    email: str = Field(description="The new user's email address.")
    name: str = Field(description="How to greet them.")

    @field_validator("user_id")
    @classmethod
    def _user_id(cls, value: str) -> str:
        if not is_valid_id(value):
            raise ValueError(ID_RULE)
        return value

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return check_email(value)


@dg.op
def greeting(context: dg.OpExecutionContext, config: WelcomePayload) -> dict[str, Any]:
    """Child run: hello_world."""
    return dict(run_child(context, "hello_world", {"name": config.name}))


@dg.op
def profile(
    context: dg.OpExecutionContext, config: WelcomePayload, hello: dict[str, Any]
) -> dg.Output[dict[str, Any]]:
    """Child run: typed_task stores the record, greeting included."""
    data = {"name": config.name, "greeting": hello["message"]}
    record = run_child(
        context, "typed_task", {"user_id": config.user_id, "email": config.email, "data": data}
    )
    return job_result({"greeting": hello["message"], "record": record["record"]})


def _run_config(payload: WelcomePayload) -> dict[str, Any]:
    config = {"config": payload.model_dump()}
    return {"ops": {"greeting": config, "profile": config}}


@dg.job(
    description="Welcome a new user: greet them (hello_world) and store their record (typed_task).",
    config=payload_mapping(WelcomePayload, _run_config),
    tags=QUEUE.job_tags(),
)
def welcome_user() -> None:
    profile(greeting())
