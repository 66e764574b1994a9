"""The seed's small jobs in process: hello_world and typed_task results, their payload rules, and every
example payload file valid for its job."""

import json
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from offload.paths import PROJECT_ROOT
from offload.payload import payload_errors
from pipelines.batch.payload import BatchPayload
from pipelines.hello_world import HelloPayload, hello_world
from pipelines.onboarding import WelcomePayload
from pipelines.typed_task import TypedPayload, typed_task
from resources.storage import LocalStorage


def test_hello_world_greets_and_says_when():
    result = hello_world.execute_in_process(run_config={"name": "  Ada "})
    output = result.output_for_node("greet")
    assert output["message"] == "Hello, Ada!"
    assert datetime.fromisoformat(output["completed_at"]).tzinfo is not None


def test_typed_task_stores_the_record(tmp_path):
    payload = {"user_id": "u_1", "email": "ada@example.com", "data": {"plan": "pro", "seats": [1, 2]}}
    result = typed_task.execute_in_process(
        run_config=payload, resources={"storage": LocalStorage(root=str(tmp_path))}
    )
    output = result.output_for_node("store_record")
    record = json.loads(Path(output["record"].removeprefix("file://")).read_text())
    assert record["data"] == payload["data"] and record["run_id"] == result.run_id
    assert output["fields"] == ["plan", "seats"]


@pytest.mark.parametrize(
    ("model", "payload", "line"),
    [
        (HelloPayload, {"name": "   "}, "name = '   ': must be 1-100 characters"),
        (TypedPayload, {"user_id": "../x", "email": "a@b.co"}, "user_id = '../x': must be 1-64 characters"),
        (TypedPayload, {"user_id": "u", "email": "nope"}, "email = 'nope': must be an email address"),
        (
            TypedPayload,
            {"user_id": "u", "email": "a@b.co", "data": {"x": "y" * 70_000}},
            "data: must be at most 64 KiB",
        ),
        (WelcomePayload, {"user_id": "u", "email": "x", "name": "n"}, "email = 'x'"),
    ],
)
def test_payload_rules_name_the_field(model, payload, line):
    with pytest.raises(ValidationError) as caught:
        model(**payload)
    assert payload_errors(caught.value)[0].startswith(line)


@pytest.mark.parametrize(
    ("name", "model"),
    [("hello_world", HelloPayload), ("typed_task", TypedPayload), ("batch_processor", BatchPayload),
     ("welcome_user", WelcomePayload)],
)  # fmt: skip
def test_example_payload_files_are_valid(name, model):
    model(**yaml.safe_load((PROJECT_ROOT / "examples" / f"{name}.yaml").read_text()))
