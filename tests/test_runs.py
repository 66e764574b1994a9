"""Status mapping from Dagster's run records to offload's vocabulary, and reading results and errors out of
event records, as the webserver returns them."""

import dagster as dg
import pytest

from offload.client.runs import RETRY_DECISION_GRACE, Status, error_of, result_of, status_of
from offload.retry import RetryPolicy, retrying


def record(status, start=None, end=None, **tags):
    return {"status": status, "startTime": start, "endTime": end,
            "tags": [{"key": k.replace("__", "/"), "value": v} for k, v in tags.items()]}  # fmt: skip


@pytest.mark.parametrize(
    ("dagster", "offload"),
    [
        ("QUEUED", Status.QUEUED),
        ("NOT_STARTED", Status.QUEUED),
        ("STARTING", Status.EXECUTING),
        ("STARTED", Status.EXECUTING),
        ("CANCELING", Status.EXECUTING),
        ("SUCCESS", Status.COMPLETED),
        ("CANCELED", Status.CANCELED),
    ],
)
def test_plain_statuses(dagster, offload):
    assert status_of(record(dagster)) is offload


@pytest.mark.parametrize(
    ("reason", "offload"),
    [
        ("STEP_FAILURE", Status.FAILED),
        ("JOB_INITIALIZATION_FAILURE", Status.FAILED),
        ("RUN_WORKER_RESTART", Status.CRASHED),
        ("UNEXPECTED_TERMINATION", Status.CRASHED),
        ("START_TIMEOUT", Status.CRASHED),
        (None, Status.CRASHED),  # failed from outside the worker (run monitoring found it dead)
    ],
)
def test_failures_are_failed_or_crashed_by_reason(reason, offload):
    tags = {"dagster__failure_reason": reason} if reason else {}
    assert status_of(record("FAILURE", **tags)) is offload


def test_a_failure_about_to_be_retried_is_still_queued():
    tags = {"dagster__failure_reason": "STEP_FAILURE", "dagster__will_retry": "true"}
    assert status_of(record("FAILURE", **tags)) is Status.QUEUED


@pytest.mark.parametrize(
    ("will_retry", "ended_ago", "offload"),
    [
        (None, 1.0, Status.QUEUED),  # Dagster has written FAILURE, not yet its retry decision
        (None, RETRY_DECISION_GRACE + 1, Status.FAILED),  # an instance with run retries off never writes it
        ("false", 1.0, Status.FAILED),
        ("true", RETRY_DECISION_GRACE + 1, Status.QUEUED),
    ],
)
def test_a_failure_allowed_retries_is_final_once_dagster_decided(will_retry, ended_ago, offload):
    tags = {"dagster__failure_reason": "STEP_FAILURE", "dagster__max_retries": "1"}
    if will_retry:
        tags["dagster__will_retry"] = will_retry
    assert status_of(record("FAILURE", 90.0, 100.0, **tags), now=100.0 + ended_ago) is offload


def test_a_failure_without_retries_is_final_at_once():
    tags = {"dagster__failure_reason": "STEP_FAILURE", "dagster__max_retries": "0"}
    assert status_of(record("FAILURE", 90.0, 100.0, **tags), now=101.0) is Status.FAILED
    assert status_of(record("FAILURE", 90.0, 100.0, dagster__failure_reason="STEP_FAILURE"), now=101.0) is (
        Status.FAILED
    )


@pytest.mark.parametrize("dagster", ["FAILURE", "CANCELED"])
def test_runs_stopped_at_their_max_runtime_timed_out(dagster):
    assert status_of(record(dagster, 100.0, 131.0, dagster__max_runtime="30")) is Status.TIMED_OUT
    assert status_of(record(dagster, 100.0, 110.0, dagster__max_runtime="30")) is not Status.TIMED_OUT


def test_final_and_failure_sets():
    assert {s for s in Status if s.is_final} == {
        "COMPLETED",
        "FAILED",
        "CANCELED",
        "CRASHED",
        "TIMED_OUT",
        "EXPIRED",
    }
    assert {s for s in Status if s.is_failure} == {"FAILED", "CRASHED", "TIMED_OUT"}


def test_result_is_the_last_result_metadata():
    events = [
        {
            "__typename": "ExecutionStepOutputEvent",
            "metadataEntries": [{"label": "result", "jsonString": "[1]"}],
        },
        {"__typename": "ExecutionStepOutputEvent", "metadataEntries": [{"label": "bytes", "intValue": 3}]},
        {
            "__typename": "ExecutionStepOutputEvent",
            "metadataEntries": [{"label": "result", "jsonString": '{"a": 2}'}],
        },
    ]
    assert result_of(events) == {"a": 2}
    assert result_of([]) is None


def test_error_names_the_failed_step_in_one_line(monkeypatch):
    monkeypatch.setenv("SHOP_API_TOKEN", "tok_live_123456")
    events = [{"__typename": "ExecutionStepFailureEvent", "stepKey": "download",
               "error": {"message": "Failure: video_url: 404 tok_live_123456\nmore detail\n"}}]  # fmt: skip
    assert error_of(events) == "download: Failure: video_url: 404 ***"
    assert error_of([{"__typename": "RunFailureEvent", "message": "Exceeded maximum runtime"}]) == (
        "Exceeded maximum runtime"
    )


# --- errors of real failed runs, as the webserver hands them over ---------------------------------------


def _graphql_error(info) -> dict:
    """A Dagster ``SerializableErrorInfo`` as the webserver's ``PythonError`` (message, className, causes)."""
    causes, cause = [], info.cause
    while cause is not None:
        causes.append({"message": cause.message, "className": cause.cls_name})
        cause = cause.cause
    return {"message": info.message, "className": info.cls_name, "causes": causes}


def _failed_step_events(op) -> list[dict]:
    @dg.job
    def broken():
        op()

    result = broken.execute_in_process(raise_on_error=False)
    return [
        {"__typename": "ExecutionStepFailureEvent", "stepKey": event.step_key, "message": event.message,
         "failureMetadata": None, "error": _graphql_error(event.step_failure_data.error)}
        for event in result.get_step_failure_events()
    ]  # fmt: skip


def test_error_names_the_real_cause_not_dagsters_wrapper():
    @dg.op(name="upload")
    def upload() -> None:
        raise OSError(30, "Read-only file system")

    events = _failed_step_events(upload)
    assert "DagsterExecutionStepExecutionError" in events[0]["error"]["message"]  # what Dagster reports

    assert error_of(events) == "upload: OSError: [Errno 30] Read-only file system"


def test_error_after_the_last_retry_is_the_steps_own():
    @dg.op(name="fetch")
    @retrying(RetryPolicy(max_attempts=2, min_delay=0, max_delay=0))
    def fetch() -> None:
        raise ConnectionResetError("peer went away")

    assert error_of(_failed_step_events(fetch)) == "fetch: ConnectionResetError: peer went away"


def test_error_of_a_run_over_its_max_runtime_is_the_limit():
    events = [
        {"__typename": "ExecutionStepFailureEvent", "stepKey": "transcode", "failureMetadata": None,
         "error": {"message": "dagster._core.errors.DagsterExecutionInterruptedError\n",
                   "className": "DagsterExecutionInterruptedError", "causes": []}},
        {"__typename": "RunFailureEvent", "message": "exceeded max runtime of 10 s", "error": None},
    ]  # fmt: skip
    assert error_of(events) == "exceeded max runtime of 10 s"


def test_a_setting_that_stopped_the_run_is_failed_with_its_reason():
    reason = "OPENAI_API_KEY is not set: set it to your OpenAI API key"
    tags = {"dagster__failure_reason": "RUN_EXCEPTION", "dagster__will_retry": "false",
            "offload__configuration_error": reason}  # fmt: skip
    assert status_of(record("FAILURE", 1.0, 2.0, **tags)) is Status.FAILED
    wrapper = {"__typename": "RunFailureEvent", "message": "An exception was thrown during execution.",
               "error": {"message": "DagsterResourceFunctionError: Error executing resource_fn\n",
                         "className": "DagsterResourceFunctionError", "causes": []}}  # fmt: skip
    assert error_of([wrapper], {"offload/configuration_error": reason}) == reason


def test_the_clients_graphql_documents_are_valid_for_the_webserver():
    from dagster_graphql.schema import create_schema
    from graphql import parse, validate

    from offload.client import documents

    fragments = {"RUN_FIELDS", "LAUNCH_RESULT"}  # parts of the documents below, not documents themselves
    names = sorted(set(documents.__all__) - fragments)
    assert {"EVENTS_QUERY", "RUN_QUERY", "RUNS_QUERY", "LAUNCH", "TERMINATE"} <= set(names)
    for name in names:
        assert validate(create_schema().graphql_schema, parse(getattr(documents, name))) == [], name
