"""Payload validation: every rule of the video payload, reported as one line naming the field, before any
run starts; and the CLI hook that prints those lines instead of a traceback."""

import json

import dagster as dg
import pytest
from pydantic import ValidationError

from offload.payload import MAX_PAYLOAD_BYTES, payload_errors, payload_problems
from pipelines.video.payload import SingleFormatPayload, VideoPayload

GOOD = {
    "video_id": "vid_1",
    "video_url": "https://cdn.example.com/a.mp4",
    "user_id": "user-9",
    "user_email": "ada@example.com",
}


def test_good_payload_keeps_values_and_defaults_formats():
    payload = VideoPayload(**GOOD)
    assert payload.formats == ["mp4", "webm"]
    assert payload.video_id == "vid_1"


def test_formats_are_deduplicated_in_canonical_order():
    assert VideoPayload(**GOOD, formats=["gif", "mp4", "gif"]).formats == ["mp4", "gif"]


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("video_id", "../etc", "1-64 characters"),
        ("video_id", "a/b", "1-64 characters"),
        ("video_id", "x" * 65, "1-64 characters"),
        ("video_id", "", "1-64 characters"),
        ("user_id", "bob smith", "1-64 characters"),
        ("user_id", "nul\x00", "1-64 characters"),
        ("video_url", "ftp://host/a.mp4", "scheme http, https, file, s3"),
        ("video_url", "javascript:alert(1)", "scheme"),
        ("video_url", "https:///nohost", "must name a host"),
        ("video_url", "https://h/" + "a" * 2100, "at most 2048"),
        ("user_email", "not-an-email", "email address"),
        ("user_email", "a@b", "email address"),
        ("formats", ["mp4", "avi"], "avi not supported"),
        ("formats", [], "at least one format"),
    ],
)
def test_each_bad_field_gives_one_line_naming_field_and_rule(field, value, rule):
    with pytest.raises(ValidationError) as caught:
        VideoPayload(**(GOOD | {field: value}))
    lines = payload_errors(caught.value)
    assert lines is not None and len(lines) == 1
    assert lines[0].startswith(f"{field} = ")
    assert rule in lines[0]
    assert "\n" not in lines[0]


def test_several_bad_fields_give_one_line_each():
    with pytest.raises(ValidationError) as caught:
        VideoPayload(**(GOOD | {"video_id": "a b", "user_email": "x", "formats": ["flv"]}))
    lines = payload_errors(caught.value)
    assert lines is not None
    assert [line.split(" ", 1)[0] for line in lines] == ["video_id", "user_email", "formats"]


def test_single_format_payload_checks_its_format():
    with pytest.raises(ValidationError) as caught:
        SingleFormatPayload(**GOOD, format="mkv")
    assert payload_errors(caught.value) == ["format = 'mkv': must be one of mp4, webm, gif"]
    assert SingleFormatPayload(**GOOD, format="gif").as_video_payload().formats == ["gif"]


def payload_of_size(size: int) -> dict[str, str]:
    """A payload whose JSON is exactly ``size`` bytes."""
    overhead = len(json.dumps({"blob": ""}).encode())
    payload = {"blob": "x" * (size - overhead)}
    assert len(json.dumps(payload).encode()) == size
    return payload


def test_payloads_are_limited_to_three_mib_of_json():
    assert MAX_PAYLOAD_BYTES == 3 * 1024 * 1024
    assert payload_problems(payload_of_size(MAX_PAYLOAD_BYTES)) == []
    assert payload_problems(payload_of_size(MAX_PAYLOAD_BYTES + 1)) == [
        "payload: 3,145,729 bytes is over the 3,145,728-byte limit; put large inputs in storage and pass "
        "their key"
    ]


def test_errors_unrelated_to_payloads_are_left_alone():
    assert payload_errors(RuntimeError("boom")) is None


def test_dagster_type_errors_are_reported_as_lines():
    from definitions import defs

    job = defs.resolve_job_def("video_pipeline")
    with pytest.raises(dg.DagsterInvalidConfigError) as caught:
        job.execute_in_process(run_config=GOOD | {"video_id": 5})
    lines = payload_errors(caught.value)
    assert lines and "video_id" in lines[0]


def test_rule_errors_surface_through_the_job_as_lines():
    from definitions import defs

    job = defs.resolve_job_def("video_pipeline")
    with pytest.raises(dg.DagsterError) as caught:
        job.execute_in_process(run_config=GOOD | {"user_id": "../../etc"})
    assert payload_errors(caught.value) == [
        "user_id = '../../etc': must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'"
    ]


@pytest.mark.parametrize(
    ("name", "model"), [("video_pipeline", VideoPayload), ("process_video", SingleFormatPayload)]
)
def test_example_payload_files_are_valid(name, model):
    import yaml

    from offload.paths import PROJECT_ROOT

    data = yaml.safe_load((PROJECT_ROOT / "examples" / f"{name}.yaml").read_text())
    assert model(**data).video_id == "intro-42"
