"""Every job of the code location hands back its documented result: each runs to COMPLETED in process on a
real instance (embedded resources under a temporary data directory; OpenAI, HTTP pages and the sync source
are local), and its result, read from the event log the way ``Client.retrieve(...).output`` reads it, has
the documented shape. A job added without a documented shape fails ``test_every_job_has_a_documented_shape``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

import pipelines
from benchmarks.support.http_server import LocalHTTPServer, body
from offload.paths import PROJECT_ROOT
from offload.result import RESULT_LABEL
from resources import resources_for
from tests.support.openai_server import FakeOpenAI, first_user_message, openai_server
from tests.support.runs import failure_text

# The documented result of each job: the keys of its JSON object (for a list, of each item).
SHAPES: dict[str, set[str]] = {
    "publish_article": {"decision"},
    "hello_world": {"message", "completed_at"},
    "typed_task": {"user_id", "record", "fields"},
    "welcome_user": {"greeting", "record"},
    "batch_processor": {"total_processed", "failed", "failures", "batches", "results"},
    "send_email": {"email_id", "to", "sent_at"},
    "resilient_task": {
        "url",
        "status",
        "content_type",
        "bytes",
        "request_attempts",
        "step_attempt",
        "json",
        "preview",
    },
    "scrape_websites": {"url", "ok", "status", "count", "matches"},
    "generate_content": {"content", "word_count", "model"},
    "content_workflow": {"article_id", "title", "content", "meta_description", "image_url"},
    "data_pipeline": {"rows", "watermark", "more_waiting"},
    "cleanup": {"dry_run", "as_of", "kinds"},
    "invoicing": {"sent", "already_sent", "no_address", "failed"},
    "stripe_webhook": {"outcome", "provider", "event_id", "event_type"},
    "clerk_webhook": {"outcome", "provider", "event_id", "event_type"},
    "github_webhook": {"outcome", "provider", "event_id", "event_type"},
    "video_pipeline": {"video_id", "outputs"},
    "process_video": {"video_id", "outputs"},
    "daily_report_job": {"day", "report_key", "report_url", "runs", "failed", "failure_rate", "emailed_to"},
}
# Jobs whose result needs a deployment (child runs go through the webserver; publish_article resumes after
# an editor's decision through the daemon): tests/test_client.py, tests/test_children.py and
# tests/test_waits.py check theirs.
NEEDS_DEPLOYMENT = {"welcome_user", "publish_article"}
PAGE = b"<html><body><h1>Front page</h1><p><a href='/a'>a link</a></p></body></html>"


def job_names() -> set[str]:
    from definitions import defs

    return {job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__")}


def test_every_job_has_a_documented_shape() -> None:
    assert job_names() == set(SHAPES)


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((PROJECT_ROOT / "examples" / f"{name}.yaml").read_text()) or {}


def writer(request: dict[str, Any]) -> str:
    asked = first_user_message(request)
    if asked.startswith("Outline"):
        return json.dumps({"title": "Tides", "sections": [{"heading": h, "points": ["p"]} for h in "abc"]})
    if asked.startswith("Optimise"):
        return json.dumps({"title": "Tides", "content": "# Tides\n\nThe moon.", "meta_description": "Tides."})
    return "# Tides\n\n## Why\n\nThe moon pulls the sea."


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[FakeOpenAI, LocalHTTPServer]]:
    with (
        openai_server() as fake,
        LocalHTTPServer({"/page": body(PAGE, headers={"Content-Type": "text/html"})}) as web,
    ):
        fake.chat = writer
        yield fake, web


def payload_for(name: str, web: LocalHTTPServer, data: Path, clip: Path) -> tuple[dict[str, Any], str | None]:
    """The job's example payload, pointed at local services; and the partition to run, if any."""
    payload = example(name)
    if name == "resilient_task":
        payload["url"] = web.url("/page")
    elif name == "scrape_websites":
        payload |= {"urls": [web.url("/page")], "selector": "h1"}
    elif name in ("video_pipeline", "process_video"):
        samples = data / "samples"
        samples.mkdir(parents=True, exist_ok=True)
        (samples / "clip.mp4").write_bytes(clip.read_bytes())
        payload["video_url"] = (samples / "clip.mp4").as_uri()
        payload.pop("formats", None)
        payload |= {"formats": ["mp4"]} if name == "video_pipeline" else {"format": "mp4"}
    elif name == "daily_report_job":
        return {}, "2026-03-01"
    return payload, None


def sync_source(data: Path) -> str:
    url = f"sqlite:///{data / 'source.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, amount INTEGER, updated_at TEXT)"
        )
        connection.exec_driver_sql("INSERT INTO orders VALUES (1, 100, '2026-03-01 12:00:00')")
    engine.dispose()
    return url


def result_of_run(instance: dg.DagsterInstance, run_id: str) -> Any:
    """The last ``result`` metadata of a step output in the run's event log (what the client reads)."""
    found = None
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_OUTPUT).records:
        event = record.event_log_entry.get_dagster_event()
        value = event.step_output_data.metadata.get(RESULT_LABEL)
        if value is not None:
            found = value.value
    return found


@pytest.mark.parametrize("name", sorted(set(SHAPES) - NEEDS_DEPLOYMENT))
def test_a_completed_run_has_the_documented_output(name, services, data_dir, clips, tmp_path, monkeypatch):
    fake, web = services
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-outputs-0000")
    monkeypatch.setenv("OFFLOAD_FETCH_ALLOW_HOSTS", f"{web.origin},{fake.origin}")
    for variable in ("DATABASE_URL", "OFFLOAD_REPORT_EMAILS", "OFFLOAD_ALERT_EMAIL"):
        monkeypatch.delenv(variable, raising=False)
    data_dir.mkdir(parents=True, exist_ok=True)
    if name == "data_pipeline":
        monkeypatch.setenv("OFFLOAD_SYNC_SOURCE_URL", sync_source(data_dir))
        monkeypatch.setenv("OFFLOAD_SYNC_SOURCE_TABLE", "orders")
    payload, partition = payload_for(name, web, data_dir, clips["plain"])
    defs = dg.Definitions.merge(pipelines.defs, dg.Definitions(resources=resources_for("local")))
    (tmp_path / "home").mkdir()

    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        result = defs.resolve_job_def(name).execute_in_process(
            run_config=payload, instance=instance, partition_key=partition, raise_on_error=False
        )
        assert result.success, failure_text(result)
        output = result_of_run(instance, result.run_id)

    assert output is not None, f"{name} declares no result"
    items = output if isinstance(output, list) else [output]
    assert items and all(isinstance(item, dict) for item in items), output
    for item in items:
        assert SHAPES[name] <= set(item), (name, sorted(item))
