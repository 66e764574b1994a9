"""offload/log.py: ``redact`` (values of secret-named variables, passwords inside URLs, JSON-escaped secrets;
short values and ordinary text left alone) and, inside real Dagster op runs read back from the instance's
event log, ``StepLog``'s ``message {json fields}`` lines and their redaction, ``Progress`` logging at most
once per 10% boundary and always at 100%, and ``StepLog.timed`` adding ``duration_s``.
"""

import base64
import json
import logging
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import dagster as dg
import pytest

from offload.log import MASK, Progress, StepLog, holds_secret, redact

# --- redact ----------------------------------------------------------------------------------------------

# Long texts that made a pattern backtrack quadratically: a run of scheme letters with no "://" (a 3 MiB
# payload string took minutes to check), and a long dotted line (40 KB of "a." took 30 s to mask).
LONG_TEXTS = [
    '"x" * 3_000_000',
    '"a." * 1_500_000',
    '"a." * 1_000_000 + "https://u:hunter22@h"',
    '"http://" * 400_000',
]


@pytest.mark.parametrize("text", LONG_TEXTS)
def test_long_texts_are_checked_and_masked_in_one_pass(text):
    """In a process of its own, killed after 60 s: a quadratic pattern holds the GIL for hours."""
    import subprocess
    import sys

    code = f"from offload.redaction import holds_secret, redact; t = {text}; redact(t, {{}})"
    code += "; holds_secret(t, {})"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=Path(__file__).parents[1])


def test_the_bounded_patterns_still_find_what_they_found():
    """A scheme preceded by a long run of letters, and a credential parameter after a long dotted name."""
    assert holds_secret("a" * 40 + "https://user:hunter22@db.example", {})
    assert redact("a" * 40 + "https://user:hunter22@db.example", {}).endswith(
        f"https://user:{MASK}@db.example"
    )
    dotted = "x." * 50 + "api_key=abcdef123"
    assert redact(f"see {dotted} now", {}) == f"see {'x.' * 50}api_key={MASK} now"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RESEND_API_KEY", "re_live_0123456789abcdef"),
        ("AWS_SECRET", "wJalrXUtnFEMI/K7MDENG"),
        ("GITHUB_TOKEN", "ghp_abcdef1234567890"),
        ("DB_PASSWORD", "correct-horse-battery"),
        ("stripe_api_key", "sk_test_lowercase_name"),  # names are matched without regard to case
    ],
)
def test_redact_masks_values_of_secret_named_variables(name: str, value: str) -> None:
    environ = {name: value}
    assert redact(f"sent with {value}; again:{value}.", environ) == f"sent with {MASK}; again:{MASK}."


def test_redact_leaves_values_of_other_variables_alone() -> None:
    environ = {"GREETING": "correct-horse-battery", "KEYBOARD_LAYOUT": "dvorak-programmer"}
    text = "layout dvorak-programmer, greeting correct-horse-battery"
    assert redact(text, environ) == text


def test_redact_uses_the_environ_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFLOAD_TEST_TOKEN", "tok_from_process_env")
    assert redact("tok_from_process_env", {}) == "tok_from_process_env"
    assert redact("tok_from_process_env") == MASK  # no mapping: the process environment


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://user:pw@host/db", "postgresql://user:***@host/db"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("GET https://alice:p4ss@example.com/x?y=1 failed", "GET https://alice:***@example.com/x?y=1 failed"),
        (
            "broker amqp://guest:guest@localhost:5672// and db postgresql+psycopg2://app:hunter2@db/offload",
            "broker amqp://guest:***@localhost:5672// and db postgresql+psycopg2://app:***@db/offload",
        ),
    ],
)
def test_redact_masks_passwords_inside_urls(text: str, expected: str) -> None:
    assert redact(text, {}) == expected


def test_redact_masks_a_url_password_from_the_environment_wherever_it_appears() -> None:
    environ = {"DATABASE_URL": "postgresql://app:Tr0ub4dor@db/offload"}
    assert redact("login with Tr0ub4dor rejected", environ) == f"login with {MASK} rejected"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "transcoded 3 formats in 12.5 s",
        "https://example.com:8443/path?q=1",
        "http://user@host/path",
        "mail ada@example.com at 10:30, ratio 16:9",
        "s3://bucket/videos/u1/v1.mp4",
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    environ = {
        "RESEND_API_KEY": "re_live_0123456789abcdef",
        "DATABASE_URL": "postgresql://app:Tr0ub4dor@db/x",
    }
    assert redact(text, environ) == text


@pytest.mark.parametrize("value", ["", "a", "12345"])
def test_redact_leaves_short_secret_values_alone(value: str) -> None:
    # Masking "12345" (or, worse, "") would garble ordinary text; URL passwords are masked by their place.
    text = "order 12345 has a value"
    assert redact(text, {"PIN_KEY": value, "SHORT_TOKEN": value}) == text


def test_redact_masks_the_longer_of_two_overlapping_secrets_whole() -> None:
    environ = {"A_KEY": "abcdef", "B_KEY": "abcdefghij"}
    assert redact("x abcdefghij y abcdef", environ) == f"x {MASK} y {MASK}"


@pytest.mark.parametrize("value", ['pa"ss-word9', "back\\slash99", "pässwörd99", "tab\there99"])
def test_redact_masks_secrets_as_json_writes_them(value: str) -> None:
    # StepLog renders fields with json.dumps, which escapes quotes, backslashes and non-ASCII characters.
    rendered = json.dumps({"password": value})
    assert redact(rendered, {"DB_PASSWORD": value}) == f'{{"password": "{MASK}"}}'


# --- StepLog, Progress and timed inside a real op ---------------------------------------------------------


def logged_by(body: Callable[[StepLog], None]) -> list[tuple[int, str]]:
    """Run ``body`` with a ``StepLog`` inside a one-op job; return the op's own log lines as
    ``(level, message)``, read back from the instance's event log."""

    @dg.op
    def step(context: dg.OpExecutionContext) -> None:
        body(StepLog(context))

    @dg.job
    def log_job() -> None:
        step()

    instance = dg.DagsterInstance.ephemeral()
    result = log_job.execute_in_process(instance=instance)
    assert result.success
    return [
        (int(entry.level), entry.user_message)
        for entry in instance.all_logs(result.run_id)
        if entry.dagster_event is None and entry.step_key == "step"
    ]


def messages(lines: list[tuple[int, str]]) -> list[str]:
    return [message for _, message in lines]


def fields_of(message: str, prefix: str) -> dict[str, object]:
    assert message.startswith(prefix + " {"), message
    parsed = json.loads(message[len(prefix) + 1 :])
    assert isinstance(parsed, dict)
    return parsed


def test_steplog_renders_message_then_compact_json_fields() -> None:
    def body(log: StepLog) -> None:
        log.info("probed", {"width": 320, "codec": "h264", "has_audio": True, "path": Path("/w/source")})
        log.info("plain message")
        log.info("no fields", {})

    assert messages(logged_by(body)) == [
        'probed {"width": 320, "codec": "h264", "has_audio": true, "path": "/w/source"}',
        "plain message",
        "no fields",
    ]


def test_steplog_levels() -> None:
    def body(log: StepLog) -> None:
        log.debug("d", {"n": 1})
        log.info("i")
        log.warning("w")
        log.error("e")

    assert logged_by(body) == [
        (logging.DEBUG, 'd {"n": 1}'),
        (logging.INFO, "i"),
        (logging.WARNING, "w"),
        (logging.ERROR, "e"),
    ]


def test_steplog_redacts_message_and_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    api_key, password = "re_live_in_the_op_0123", 'q"uote\\pässwörd'
    monkeypatch.setenv("OFFLOAD_TEST_API_KEY", api_key)
    monkeypatch.setenv("OFFLOAD_TEST_DB_PASSWORD", password)

    def body(log: StepLog) -> None:
        log.warning(
            f"sending with {api_key}",
            {"key": api_key, "db": "postgresql://app:hunter22@db/offload", "password": password},
        )

    [(level, message)] = logged_by(body)
    assert level == logging.WARNING
    assert message == (
        'sending with *** {"key": "***", "db": "postgresql://app:***@db/offload", "password": "***"}'
    )


def test_progress_logs_once_per_ten_percent_boundary_and_at_100() -> None:
    def body(log: StepLog) -> None:
        progress = Progress(log, "encode")
        for hundredth in range(101):
            progress.update(hundredth / 100)
        progress.update(1.0)  # ffmpeg reports the end once more: not logged twice

    assert messages(logged_by(body)) == [f"encode {p}%" for p in range(10, 101, 10)]


def test_progress_with_accumulated_float_steps_still_ends_at_100() -> None:
    def body(log: StepLog) -> None:
        progress, done = Progress(log, "download"), 0.0
        for _ in range(100):
            done += 0.01  # sums to 1.0000000000000007: clamped, not lost
            progress.update(done)

    logged = messages(logged_by(body))
    assert len(logged) == 10
    assert logged[-1] == "download 100%"
    decades = [int(m.split()[1].rstrip("%")) // 10 for m in logged]
    assert decades == list(range(1, 11))  # one line per boundary, never two in one decade


def test_progress_jump_to_the_end_logs_100_once_with_fields() -> None:
    def body(log: StepLog) -> None:
        progress = Progress(log, "upload")
        progress.update(0.05)  # below the first boundary: nothing
        progress.update(-1.0)  # nonsense below 0 is clamped: nothing
        progress.update(1.7, {"bytes": 99})  # past the end is clamped to 100%
        progress.update(1.0)

    assert messages(logged_by(body)) == ['upload 100% {"bytes": 99}']


def test_progress_reaches_100_when_the_step_does_not_divide_it() -> None:
    def body(log: StepLog) -> None:
        progress = Progress(log, "gif", step_percent=15)
        for hundredth in range(101):
            progress.update(hundredth / 100)

    assert messages(logged_by(body)) == [f"gif {p}%" for p in (15, 30, 45, 60, 75, 90, 100)]


def test_timed_adds_duration_and_fields_set_along_the_way(monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock that reads 100.0 at the start and 102.3456 at the end, instead of sleeping.
    monkeypatch.setattr("offload.log.time", SimpleNamespace(perf_counter=iter([100.0, 102.3456]).__next__))

    def body(log: StepLog) -> None:
        with log.timed("uploaded", {"key": "videos/u1/v1.mp4"}) as fields:
            fields["bytes"] = 1234

    [message] = messages(logged_by(body))
    assert message == 'uploaded {"key": "videos/u1/v1.mp4", "bytes": 1234, "duration_s": 2.346}'


def test_timed_with_the_real_clock_logs_a_small_duration() -> None:
    def body(log: StepLog) -> None:
        with log.timed("noop"):
            pass

    [message] = messages(logged_by(body))
    duration = fields_of(message, "noop")["duration_s"]
    assert isinstance(duration, float) and 0 <= duration < 5


# --- encoded secrets and credential-named query values ------------------------------------------------


ENCODED_KEY = "sk-test-Encoded-7f3a9c2d"


def _encodings(secret: str) -> dict[str, str]:
    raw = secret.encode()
    return {
        "base64": base64.b64encode(raw).decode(),
        "base64 inside a longer string": base64.b64encode(b"Bearer " + raw + b" rejected").decode(),
        "base64 at offset 2": base64.b64encode(b"ab" + raw).decode(),
        "url-safe base64": base64.urlsafe_b64encode(b"k=" + raw).decode(),
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
        "upper case": secret.upper(),
        "lower case": secret.lower(),
        "url-encoded": quote("key=" + secret + "/!", safe=""),
    }


@pytest.mark.parametrize("form", list(_encodings(ENCODED_KEY)))
def test_redact_masks_encoded_forms_of_a_known_secret(form: str) -> None:
    """A hostile endpoint echoed the API key back in base64; any of these forms must be masked."""
    encoded = _encodings(ENCODED_KEY)[form]
    text = f"upstream said: {encoded}."
    masked = redact(text, {"OPENAI_API_KEY": ENCODED_KEY})
    assert MASK in masked
    assert encoded not in masked


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /cb?user=ann&password=hunter2&x=1", f"GET /cb?user=ann&password={MASK}&x=1"),
        ("https://api.test/v1?token=abc.def-1", f"https://api.test/v1?token={MASK}"),
        (
            "redirect to /login?access_token=eyJhbGci&state=9",
            f"redirect to /login?access_token={MASK}&state=9",
        ),
        ("form body: api_key=K123&name=x", f"form body: api_key={MASK}&name=x"),
    ],
)
def test_redact_masks_credential_named_query_values(text: str, expected: str) -> None:
    assert redact(text, {}) == expected


def test_holds_secret_sees_encoded_secrets_but_not_presigned_urls() -> None:
    environ = {"OPENAI_API_KEY": ENCODED_KEY}
    assert holds_secret(base64.b64encode(ENCODED_KEY.encode()).decode(), environ)
    assert holds_secret("https://u:pw123@db.test/x", environ)
    assert not holds_secret("https://b.s3.test/k.mp4?X-Amz-Signature=abc&X-Amz-Security-Token=def", environ)
