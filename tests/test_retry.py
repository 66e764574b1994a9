"""Step retries (``offload.retry``) and the error classifier (``offload.errors``): the delay formula with and
without randomness and its cap, which policy wins (run tag > job tag > op > project default), the dev switch,
and real Dagster runs in process: delays measured between attempts against the formula, a non-retryable
error failing after exactly one attempt, the per-run override, generators and assets, and every attempt
logged with its number, error and delay."""

from __future__ import annotations

import random
import time
from typing import Any

import dagster as dg
import httpx
import pytest

from offload.errors import AbortTaskRunError, FetchError, PayloadError, is_retryable
from offload.retry import (
    DEFAULT_POLICY,
    MAX_ATTEMPTS_TAG,
    POLICY_TAG,
    RetryPolicy,
    effective_policy,
    retries_enabled,
    retrying,
)

# --- the formula --------------------------------------------------------------------------------------------


def test_project_default_is_the_seeds_retries_default() -> None:
    assert RetryPolicy(max_attempts=3, factor=2, min_delay=1, max_delay=10, randomize=True) == DEFAULT_POLICY


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (RetryPolicy(min_delay=1, factor=2, max_delay=10, randomize=False), [1, 2, 4, 8, 10, 10]),
        (RetryPolicy(min_delay=0.5, factor=1.8, max_delay=30, randomize=False), [0.5, 0.9, 1.62, 2.916]),
        (RetryPolicy(min_delay=2, factor=1, max_delay=60, randomize=False), [2, 2, 2]),
        (RetryPolicy(min_delay=0, factor=3, max_delay=5, randomize=False), [0, 0]),
    ],
)
def test_delay_without_randomness_is_the_formula(policy: RetryPolicy, expected: list[float]) -> None:
    for attempt, delay in enumerate(expected, start=1):
        assert policy.delay(attempt) == pytest.approx(delay)


def test_randomized_delay_is_within_one_to_two_times_and_never_over_the_cap() -> None:
    policy = RetryPolicy(min_delay=1, factor=2, max_delay=10, randomize=True)
    rng = random.Random(7)
    for attempt in range(1, 8):
        base = min(10.0, 2.0 ** (attempt - 1))
        delays = [policy.delay(attempt, rand=rng.random) for _ in range(2000)]
        assert all(delay <= 10.0 for delay in delays)
        if 2 * base <= 10:  # below the cap: the whole [1x, 2x) range, spread over it
            assert all(base <= delay < 2 * base for delay in delays)
            assert max(delays) - min(delays) > 0.9 * base
        else:  # the cap bites for part (or all) of the range
            assert all(min(base, 10.0) <= delay for delay in delays)
    # The edges of random() itself: 0 gives exactly 1x, the largest value stays below 2x.
    assert policy.delay(3, rand=lambda: 0.0) == 4.0
    assert policy.delay(3, rand=lambda: 0.9999999) < 8.0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 101}, "max_attempts"),
        ({"factor": 0.5}, "factor"),
        ({"min_delay": -1}, "min_delay"),
        ({"min_delay": 5, "max_delay": 1}, "must not be below min_delay"),
        ({"maxAttempts": 3}, "maxAttempts"),
    ],
)
def test_bad_policies_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**fields)


# --- which policy applies -----------------------------------------------------------------------------------

OP_POLICY = RetryPolicy(max_attempts=4, min_delay=0.5)
JOB_POLICY = RetryPolicy(max_attempts=6, min_delay=2, randomize=False)


def test_op_policy_beats_the_default_and_job_tag_beats_the_op() -> None:
    assert effective_policy(None, {}, {}) == DEFAULT_POLICY
    assert effective_policy(OP_POLICY, {}, {}) == OP_POLICY
    assert effective_policy(OP_POLICY, JOB_POLICY.tags(), {}) == JOB_POLICY


def test_run_tag_overrides_only_max_attempts() -> None:
    policy = effective_policy(OP_POLICY, {**JOB_POLICY.tags(), MAX_ATTEMPTS_TAG: "2"}, {})
    assert policy == JOB_POLICY.model_copy(update={"max_attempts": 2})


@pytest.mark.parametrize("value", ["0", "abc", "101", "-1", "2.5"])
def test_bad_max_attempts_tag_is_one_clear_line(value: str) -> None:
    with pytest.raises(ValueError) as caught:
        effective_policy(None, {MAX_ATTEMPTS_TAG: value}, {})
    assert str(caught.value) == (
        f"tag offload/max_attempts = {value!r}: must be a whole number from 1 to 100"
    )


def test_bad_policy_tag_names_the_tag_and_field() -> None:
    with pytest.raises(ValueError, match=r"^tag offload/retry: factor: "):
        effective_policy(None, {POLICY_TAG: '{"factor": 0}'}, {})


@pytest.mark.parametrize(
    ("environ", "enabled"),
    [
        ({}, True),  # not in development: always on
        ({"OFFLOAD_RETRIES_IN_DEV": "false"}, True),  # the switch only applies under dagster dev
        ({"DAGSTER_IS_DEV_CLI": "1"}, True),  # in development, on by default
        ({"DAGSTER_IS_DEV_CLI": "1", "OFFLOAD_RETRIES_IN_DEV": "false"}, False),
        ({"DAGSTER_IS_DEV_CLI": "1", "OFFLOAD_RETRIES_IN_DEV": "0"}, False),
        ({"DAGSTER_IS_DEV_CLI": "1", "OFFLOAD_RETRIES_IN_DEV": "true"}, True),
    ],
)
def test_dev_switch(environ: dict[str, str], enabled: bool) -> None:
    assert retries_enabled(environ) is enabled
    expected = 5 if enabled else 1
    assert effective_policy(None, {MAX_ATTEMPTS_TAG: "5"}, environ).max_attempts == expected


def test_dev_switch_rejects_other_values() -> None:
    with pytest.raises(ValueError, match=r"^OFFLOAD_RETRIES_IN_DEV: must be true or false, got 'maybe'$"):
        retries_enabled({"DAGSTER_IS_DEV_CLI": "1", "OFFLOAD_RETRIES_IN_DEV": "maybe"})


# --- the classifier -----------------------------------------------------------------------------------------


def _status_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "https://api.test/x")
    return httpx.HTTPStatusError("x", request=request, response=httpx.Response(status, request=request))


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (ConnectionResetError("reset by peer"), True),
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (httpx.ReadTimeout("slow"), True),
        (httpx.ConnectError("down"), True),
        (_status_error(408), True),
        (_status_error(409), True),
        (_status_error(429), True),
        (_status_error(500), True),
        (_status_error(503), True),
        (_status_error(400), False),
        (_status_error(401), False),
        (_status_error(404), False),
        (_status_error(422), False),
        (FetchError("HTTP 503", retryable=True), True),
        (FetchError("HTTP 404"), False),
        (AbortTaskRunError("bad input"), False),
        (dg.Failure("no", allow_retries=False), False),
        (dg.Failure("maybe"), True),
        (PayloadError(["x: bad"]), False),
        (RuntimeError("something unknown"), True),  # as in Trigger.dev: unknown errors get their attempts
    ],
)
def test_is_retryable(error: BaseException, retryable: bool) -> None:
    assert is_retryable(error) is retryable


# --- in Dagster ---------------------------------------------------------------------------------------------

FAST = RetryPolicy(max_attempts=3, min_delay=0.01, max_delay=0.05, randomize=False)


class Script:
    """What a test op does on each attempt, and when each attempt started and failed."""

    def __init__(self, *outcomes: BaseException | None):
        self.outcomes = list(outcomes)
        self.starts: list[float] = []
        self.failures: list[float] = []

    def attempt(self) -> int:
        self.starts.append(time.monotonic())
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            self.failures.append(time.monotonic())
            raise outcome
        return len(self.starts)


SCRIPT = Script()


def description(result: dg.ExecuteInProcessResult) -> str | None:
    """The description of the first step failure's ``dg.Failure``, if it was one."""
    user = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    return user.description if user is not None else None


def error_text(result: dg.ExecuteInProcessResult) -> str:
    """The first step failure's error, past Dagster's wrapper to the step's own exception."""
    error = result.get_step_failure_events()[0].step_failure_data.error
    assert error is not None
    return (error.cause or error).message


def run(job: dg.JobDefinition, script: Script, **kwargs: Any) -> tuple[dg.ExecuteInProcessResult, list[str]]:
    """Run ``job`` in process with ``script`` as its ops' behaviour; the result and its log messages."""
    global SCRIPT
    SCRIPT = script
    instance = dg.DagsterInstance.ephemeral()
    result = job.execute_in_process(instance=instance, raise_on_error=False, **kwargs)
    messages = [entry.user_message for entry in instance.all_logs(result.run_id) if entry.user_message]
    return result, messages


@dg.op
# Delays long enough that 10% dwarfs Dagster's own few milliseconds of bookkeeping per retry, even on a
# busy machine, and short enough to keep the test quick.
@retrying(RetryPolicy(max_attempts=4, min_delay=1.0, factor=1.6, max_delay=2.0, randomize=False))
def measured() -> int:
    return SCRIPT.attempt()


@dg.op
@retrying()
def defaulted(context: dg.OpExecutionContext) -> int:
    """No policy of its own: the job's or the project's. Takes the context, as most ops do."""
    assert context.op_def.name == "defaulted"
    return SCRIPT.attempt()


@dg.op(out={"first": dg.Out(int), "second": dg.Out(int)})
@retrying(FAST)
def yielding():
    number = SCRIPT.attempt()
    yield dg.Output(number, "first")
    yield dg.Output(number * 10, "second")


measured_job = dg.GraphDefinition(name="measured_job", node_defs=[measured]).to_job()
defaulted_job = dg.GraphDefinition(name="defaulted_job", node_defs=[defaulted]).to_job(tags=FAST.tags())
yielding_job = dg.GraphDefinition(name="yielding_job", node_defs=[yielding]).to_job()


def test_delays_between_attempts_match_the_formula_within_ten_percent() -> None:
    script = Script(ConnectionResetError("reset"), TimeoutError("slow"), ConnectionResetError("again"))
    result, messages = run(measured_job, script)
    assert result.success
    assert result.output_for_node("measured") == 4
    waited = [start - failed for failed, start in zip(script.failures, script.starts[1:], strict=True)]
    formula = [1.0, 1.6, 2.0]  # min(2.0, 1.0 * 1.6**(n-1)): the third is capped (2.56)
    for measured_delay, expected in zip(waited, formula, strict=True):
        assert expected <= measured_delay <= expected * 1.1, (waited, formula)
    retries = [m for m in messages if "failed, retrying in" in m]
    assert retries[0].startswith("attempt 1 of 4 failed, retrying in 1.00 s")
    assert '"error": "ConnectionResetError: reset"' in retries[0]
    assert '"delay_s": 1.0' in retries[0]
    assert retries[1].startswith("attempt 2 of 4 failed, retrying in 1.60 s")
    assert '"error": "TimeoutError: slow"' in retries[1]
    assert retries[2].startswith("attempt 3 of 4 failed, retrying in 2.00 s")
    assert any(m.startswith("attempt 4 of 4 {") for m in messages)


def test_non_retryable_error_fails_after_exactly_one_attempt() -> None:
    script = Script(AbortTaskRunError("video_url: HTTP 404 from https://cdn.test/v.mp4"))
    result, messages = run(defaulted_job, script)
    assert not result.success
    assert len(script.starts) == 1
    assert description(result) == "video_url: HTTP 404 from https://cdn.test/v.mp4"
    assert any(m.startswith("attempt 1 of 3 failed, not retryable") for m in messages)
    restarts = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_RESTARTED]
    assert restarts == []


def test_last_attempt_fails_with_its_own_error() -> None:
    script = Script(*[ConnectionResetError(f"reset {n}") for n in range(1, 5)])
    result, messages = run(defaulted_job, script)
    assert not result.success
    assert len(script.starts) == 3  # the job's policy: 3 attempts
    assert "ConnectionResetError: reset 3" in error_text(result)
    assert any(m.startswith("attempt 3 of 3 failed, no attempts left") for m in messages)


def test_per_run_override_of_max_attempts() -> None:
    failing = [ConnectionResetError("reset")] * 10
    result, _ = run(defaulted_job, script := Script(*failing), tags={MAX_ATTEMPTS_TAG: "5"})
    assert not result.success
    assert len(script.starts) == 5
    result, _ = run(defaulted_job, script := Script(*failing), tags={MAX_ATTEMPTS_TAG: "1"})
    assert len(script.starts) == 1


def test_a_bad_run_tag_fails_before_the_body_runs() -> None:
    result, _ = run(defaulted_job, script := Script(), tags={MAX_ATTEMPTS_TAG: "many"})
    assert not result.success
    assert script.starts == []
    assert description(result) == ("tag offload/max_attempts = 'many': must be a whole number from 1 to 100")


def test_dev_switch_turns_retries_off_under_dagster_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_IS_DEV_CLI", "1")
    monkeypatch.setenv("OFFLOAD_RETRIES_IN_DEV", "false")
    result, messages = run(defaulted_job, script := Script(ConnectionResetError("reset")))
    assert not result.success
    assert len(script.starts) == 1
    assert any(m.startswith("attempt 1 of 1 failed, no attempts left") for m in messages)
    monkeypatch.setenv("OFFLOAD_RETRIES_IN_DEV", "true")
    result, _ = run(defaulted_job, script := Script(ConnectionResetError("reset")))
    assert result.success
    assert len(script.starts) == 2


def test_generator_ops_retry_and_yield_their_outputs_once() -> None:
    result, _ = run(yielding_job, Script(ConnectionResetError("reset")))
    assert result.success
    assert result.output_for_node("yielding", "first") == 2
    assert result.output_for_node("yielding", "second") == 20


@dg.asset
@retrying(FAST)
def flaky_asset(context: dg.AssetExecutionContext) -> int:
    return SCRIPT.attempt() + context.retry_number * 100


def test_assets_retry_too() -> None:
    global SCRIPT
    SCRIPT = script = Script(ConnectionResetError("reset"), ConnectionResetError("reset"))
    result = dg.materialize([flaky_asset], instance=dg.DagsterInstance.ephemeral())
    assert result.success
    assert len(script.starts) == 3
    assert result.output_for_node("flaky_asset") == 3 + 200
