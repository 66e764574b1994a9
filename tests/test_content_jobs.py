"""The AI content jobs end to end, in process, with the real ``openai`` SDK against a fake OpenAI server on
127.0.0.1: ``generate_content`` (text, word count, model, tokens billed); ``content_workflow`` (outline,
article, SEO pass in JSON mode, hero image as b64_json or as a link fetched through the SSRF-guarded
downloader, article in the app database and as Markdown in storage, usage billed once, previews as
metadata); re-execution from a failed image stage that does not call the chat endpoint again; the failures
a user can meet (invalid JSON twice, a provider that sends no image); payload rules; and an API key seeded
in the environment that never reaches the event log."""

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from pydantic import ValidationError

from offload import paths
from offload.net.download import Downloader
from offload.payload import payload_errors
from pipelines.content import content_workflow, generate_content
from pipelines.content.jobs import content_workflow_graph
from pipelines.content.payload import ContentWorkflowPayload, GenerateContentPayload
from pipelines.content.text import word_count
from resources import resources_for
from resources.ai import OpenAIResource
from resources.database import AppDatabase
from resources.storage import LocalStorage
from tests.support.openai_server import (
    CHAT,
    IMAGES,
    Failure,
    FakeOpenAI,
    first_user_message,
    openai_server,
    png,
)
from tests.support.runs import failure_text, output_metadata, started_steps

API_KEY = "sk-test-content-5f3a9c1d7e"
OUTLINE = {
    "title": "Tides, explained",
    "sections": [
        {"heading": "What pulls the sea", "points": ["the moon", "the sun"]},
        {"heading": "Two tides a day", "points": ["the earth turns"]},
        {"heading": "Spring and neap tides", "points": ["alignment"]},
    ],
}
ARTICLE = "# Tides, explained\n\n## What pulls the sea\n\nThe moon's gravity pulls the oceans toward it."
SEO = {
    "title": "Tides Explained: How the Moon Moves the Sea",
    "content": "# Tides Explained\n\n## Why the moon makes tides\n\nThe moon's gravity pulls the sea.",
    "meta_description": "How the moon and the sun pull the oceans into two tides a day.",
}
PAYLOAD = {"topic": "How tides work", "keywords": ["tides", "moon", "ocean"], "user_id": "writer_1"}


def writer(body: dict[str, Any]) -> str:
    """The fake model: an outline, an article or an SEO pass, depending on what it is asked."""
    asked = first_user_message(body)
    if asked.startswith("Outline"):
        return json.dumps(OUTLINE)
    if asked.startswith("Optimise"):
        return json.dumps(SEO)
    return ARTICLE


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with openai_server() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    server.reset()
    server.chat = writer
    yield server
    server.reset()


def content_resources(base_url: str, origin: str, data: Path) -> dict[str, Any]:
    return {
        "openai": OpenAIResource(api_key=API_KEY, base_url=base_url, max_retries=0),
        "storage": LocalStorage(root=str(data / "storage")),
        "database": AppDatabase(url=f"sqlite:///{data / 'app.db'}"),
        # The provider's image links point at the fake server on loopback: allowed by name, as a test must.
        "downloader": Downloader(allow_hosts=[origin]),
    }


def usage_of(data: Path, user_id: str) -> dict[str, tuple[int, str]]:
    rows = AppDatabase(url=f"sqlite:///{data / 'app.db'}").usage_for(user_id)
    return {row.kind: (row.quantity, row.run_id) for row in rows}


def chat_usage(fake: FakeOpenAI) -> tuple[int, int]:
    chat = [u for u in fake.reported_usage if "prompt_tokens" in u]
    return sum(u["prompt_tokens"] for u in chat), sum(u["completion_tokens"] for u in chat)


# --- generate_content -------------------------------------------------------------------------------------


def test_generate_content_writes_the_text_and_bills_the_tokens(fake, data_dir):
    fake.chat = lambda body: "Tides rise and fall twice a day, pulled by the moon."
    result = generate_content.execute_in_process(
        run_config={"topic": "Tides", "tone": "casual", "length": "short", "user_id": "u1"},
        resources=content_resources(fake.url, fake.origin, data_dir),
    )

    assert result.output_for_node("generate") == {
        "content": "Tides rise and fall twice a day, pulled by the moon.",
        "topic": "Tides",
        "word_count": 11,
        "model": "gpt-4o-mini-0001",
    }
    [request] = fake.of(CHAT)
    assert "casual tone" in request.body["messages"][0]["content"]
    assert "about 150 words" in request.body["messages"][1]["content"]
    prompt, completion = chat_usage(fake)
    assert usage_of(data_dir, "u1") == {
        "ai_input_tokens": (prompt, result.run_id),
        "ai_output_tokens": (completion, result.run_id),
    }
    metadata = output_metadata(result, "generate")
    assert metadata["openai_total_tokens"] == prompt + completion and metadata["word_count"] == 11


def test_generate_content_without_a_user_bills_nobody(fake, data_dir):
    result = generate_content.execute_in_process(
        run_config={"topic": "Tides"}, resources=content_resources(fake.url, fake.origin, data_dir)
    )
    assert result.success
    assert "about 500 words" in fake.of(CHAT)[0].body["messages"][1]["content"]  # medium by default
    assert "usage_ai_input_tokens" not in output_metadata(result, "generate")


# --- content_workflow -------------------------------------------------------------------------------------


@pytest.mark.parametrize("image_mode", ["b64_json", "url"])
def test_content_workflow_publishes_the_article_with_its_image(fake, data_dir, image_mode):
    fake.image_mode = image_mode
    result = content_workflow.execute_in_process(
        run_config=PAYLOAD, resources=content_resources(fake.url, fake.origin, data_dir)
    )

    assert result.success
    out = result.output_for_node("publish")
    article_id = "art_" + result.run_id.replace("-", "")
    storage = data_dir / "storage"
    image_file = storage / "images" / "writer_1" / f"{article_id}.png"
    assert out == {
        "article_id": article_id,
        "title": SEO["title"],
        "content": SEO["content"],
        "meta_description": SEO["meta_description"],
        "image_url": image_file.resolve().as_uri(),
    }
    assert image_file.read_bytes() == fake.image
    # Three chat calls (outline, article, SEO), two of them in JSON mode; one image; a link fetched once.
    modes = [r.body.get("response_format") for r in fake.of(CHAT)]
    assert modes == [{"type": "json_object"}, None, {"type": "json_object"}]
    assert fake.count(IMAGES) == 1
    assert fake.count("/files/hero.png") == (1 if image_mode == "url" else 0)

    # Saved in the app database and as Markdown with front matter in storage.
    stored = AppDatabase(url=f"sqlite:///{data_dir / 'app.db'}").get_article(article_id)
    assert stored is not None
    assert (stored.title, stored.content, stored.keywords) == (
        SEO["title"],
        SEO["content"],
        PAYLOAD["keywords"],
    )
    assert stored.image_key == f"images/writer_1/{article_id}.png" and stored.model == "gpt-4o-mini-0001"
    markdown = (storage / "articles" / "writer_1" / f"{article_id}.md").read_text()
    _, front, body = markdown.split("---\n", 2)
    assert yaml.safe_load(front)["title"] == SEO["title"]
    assert yaml.safe_load(front)["image"] == stored.image_key
    assert body.strip() == SEO["content"]

    # Billed once: every token of the three chat calls and of the image, and one image.
    prompt, completion = chat_usage(fake)
    image_usage = next(u for u in fake.reported_usage if "input_tokens" in u)
    assert usage_of(data_dir, "writer_1") == {
        "ai_input_tokens": (prompt + image_usage["input_tokens"], result.run_id),
        "ai_output_tokens": (completion + image_usage["output_tokens"], result.run_id),
        "ai_images": (1, result.run_id),
    }

    # The UI shows the article and the image as run metadata.
    assert "Tides Explained" in output_metadata(result, "publish")["article"]
    image_metadata = output_metadata(result, "hero_image")
    assert image_metadata["image"].startswith("![") and "data:image/jpeg;base64," in image_metadata["image"]
    assert image_metadata["source"] == image_mode
    assert not (data_dir / "work" / result.run_id).exists()


def test_article_and_outline_prompts_carry_the_brief(fake, data_dir):
    result = content_workflow.execute_in_process(
        run_config=PAYLOAD | {"tone": "technical", "length": "long"},
        resources=content_resources(fake.url, fake.origin, data_dir),
    )
    assert result.success
    outline_request, article_request, seo_request = (r.body["messages"] for r in fake.of(CHAT))
    assert (
        "tides, moon, ocean" in outline_request[-1]["content"]
        and "about 1000 words" in outline_request[-1]["content"]
    )
    assert "technical tone" in article_request[0]["content"]
    assert all(section["heading"] in article_request[-1]["content"] for section in OUTLINE["sections"])
    assert ARTICLE in seo_request[-1]["content"]
    assert word_count(SEO["content"]) == output_metadata(result, "optimise_seo")["words"]


def test_invalid_seo_json_twice_fails_that_stage_and_publishes_nothing(fake, data_dir):
    fake.chat = lambda body: (
        '{"title": "x", "content": ""}' if "Optimise" in first_user_message(body) else writer(body)
    )
    result = content_workflow.execute_in_process(
        run_config=PAYLOAD, resources=content_resources(fake.url, fake.origin, data_dir), raise_on_error=False
    )

    assert not result.success
    assert [e.step_key for e in result.get_step_failure_events()] == ["optimise_seo"]
    assert "optimise_seo: the model sent invalid JSON 2 times for SeoReply: content:" in failure_text(result)
    assert fake.count(CHAT) == 4 and fake.count(IMAGES) == 0
    assert usage_of(data_dir, "writer_1") == {}


def test_a_provider_that_sends_no_image_fails_the_image_stage(fake, data_dir):
    fake.image = b"<html>rate limited</html>"
    result = content_workflow.execute_in_process(
        run_config=PAYLOAD, resources=content_resources(fake.url, fake.origin, data_dir), raise_on_error=False
    )

    assert [e.step_key for e in result.get_step_failure_events()] == ["hero_image"]
    assert "hero_image: the provider sent no usable image" in failure_text(result)
    assert not (data_dir / "storage" / "images").exists()
    assert not (data_dir / "work" / result.run_id / "hero-image").exists()


def test_image_links_to_private_addresses_are_refused(fake, data_dir):
    """The provider's link goes through the SSRF guard: not allow-listed, loopback is refused."""
    fake.image_mode = "url"
    resources = content_resources(fake.url, fake.origin, data_dir) | {"downloader": Downloader()}
    result = content_workflow.execute_in_process(
        run_config=PAYLOAD, resources=resources, raise_on_error=False
    )

    assert "hero_image: download: refused" in failure_text(result)
    assert fake.count("/files/hero.png") == 0


def test_image_links_to_local_files_or_buckets_are_refused(fake, data_dir, tmp_path):
    """The provider's link is fetched under the outbound HTTP policy only: a hostile AI server naming a
    file the downloader may read (or a bucket) must not get it stored and published."""
    secret = tmp_path / "readable" / "private.png"
    secret.parent.mkdir()
    secret.write_bytes(png())
    downloader = Downloader(
        allow_hosts=[fake.origin], file_roots=[str(secret.parent)], s3_sources=["uploads-bucket/"]
    )
    fake.image_mode = "url"
    for link, rule in ((secret.as_uri(), "scheme 'file'"), ("s3://uploads-bucket/u1/x.png", "scheme 's3'")):
        fake.image_link = link
        resources = content_resources(fake.url, fake.origin, data_dir) | {"downloader": downloader}
        result = content_workflow.execute_in_process(
            run_config=PAYLOAD, resources=resources, raise_on_error=False
        )

        assert f"hero_image: download: {rule} is not allowed; use https or http" in failure_text(result)
        assert not (data_dir / "storage" / "images").exists()


# Re-execution from failure needs a job Dagster can rebuild by import, so it is defined at module level.
def content_job_for_reexecution() -> dg.JobDefinition:
    return content_workflow_graph.to_job(
        name="content_workflow_reexecution",
        config=content_workflow.config_mapping,
        executor_def=dg.in_process_executor,
        resource_defs=content_resources(
            os.environ["OFFLOAD_TEST_OPENAI_URL"], os.environ["OFFLOAD_TEST_OPENAI_ORIGIN"],
            Path(os.environ["OFFLOAD_DATA_DIR"]),
        ),
    )  # fmt: skip


def test_reexecution_after_a_failed_image_does_not_pay_for_the_text_again(
    fake, data_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("OFFLOAD_TEST_OPENAI_URL", fake.url)
    monkeypatch.setenv("OFFLOAD_TEST_OPENAI_ORIGIN", fake.origin)
    fake.fail_next[IMAGES] = [Failure(400, body={"error": {"message": "Your prompt was rejected."}})]
    job = dg.reconstructable(content_job_for_reexecution)
    (tmp_path / "home").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "home")) as instance:
        first = dg.execute_job(job, instance=instance, run_config=PAYLOAD)
        assert not first.success
        failures = [
            entry.dagster_event
            for entry in instance.all_logs(first.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        ]
        assert [event.step_key for event in failures] == ["hero_image"]
        description = failures[0].step_failure_data.user_failure_data.description
        assert description == f"hero_image: image: HTTP 400 from {fake.origin} (BadRequestError)"
        assert fake.count(CHAT) == 3

        second = dg.execute_job(
            job,
            instance=instance,
            reexecution_options=dg.ReexecutionOptions.from_failure(first.run_id, instance),
        )

        assert second.success
        assert started_steps(instance, second.run_id) == {"hero_image", "publish"}
    assert fake.count(CHAT) == 3  # the text stages were not paid for again
    assert fake.count(IMAGES) == 2
    article_id = "art_" + first.run_id.replace("-", "")  # the run family's article
    assert AppDatabase(url=f"sqlite:///{data_dir / 'app.db'}").get_article(article_id) is not None
    usage = usage_of(data_dir, "writer_1")
    assert usage["ai_images"] == (1, first.run_id)  # billed once, under the run family


# --- payloads ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "field", "value", "rule"),
    [
        (GenerateContentPayload, "topic", "  ", "must not be empty"),
        (GenerateContentPayload, "topic", "x" * 201, "at most 200 characters"),
        (GenerateContentPayload, "topic", "a\nb", "one line"),
        (GenerateContentPayload, "tone", "angry", "must be one of professional, casual, technical"),
        (GenerateContentPayload, "length", "huge", "must be one of short, medium, long"),
        (GenerateContentPayload, "user_id", "../x", "1-64 characters"),
        (ContentWorkflowPayload, "keywords", [], "must name 1-20 different keywords, got 0"),
        (ContentWorkflowPayload, "keywords", [f"k{i}" for i in range(21)], "got 21"),
        (ContentWorkflowPayload, "keywords", ["ok", ""], "must not be empty"),
        (ContentWorkflowPayload, "user_id", "a b", "1-64 characters"),
    ],
)
def test_each_bad_field_is_one_line_naming_it(model, field, value, rule):
    good = {"topic": "Tides", "keywords": ["tides"], "user_id": "u1"}
    with pytest.raises(ValidationError) as caught:
        model(**(good | {field: value}))
    [line] = payload_errors(caught.value) or []
    assert line.startswith(f"{field}") and rule in line and "\n" not in line


def test_keywords_are_trimmed_and_deduplicated():
    payload = ContentWorkflowPayload(topic="Tides", keywords=[" tides", "tides ", "moon"], user_id="u1")
    assert payload.keywords == ["tides", "moon"]


def test_a_bad_payload_starts_no_run(fake, data_dir):
    instance = dg.DagsterInstance.ephemeral()
    with pytest.raises(dg.DagsterError) as caught:
        content_workflow.execute_in_process(
            run_config=PAYLOAD | {"keywords": [], "tone": "loud"},
            resources=content_resources(fake.url, fake.origin, data_dir),
            instance=instance,
        )
    assert payload_errors(caught.value) == [
        "tone = 'loud': must be one of professional, casual, technical",
        "keywords = []: must name 1-20 different keywords, got 0",
    ]
    assert instance.get_runs() == [] and fake.requests == []


@pytest.mark.parametrize(("name", "model"), [("generate_content", GenerateContentPayload),
                                             ("content_workflow", ContentWorkflowPayload)])  # fmt: skip
def test_example_payload_files_are_valid(name, model):
    data = yaml.safe_load((paths.PROJECT_ROOT / "examples" / f"{name}.yaml").read_text())
    assert model(**data).topic


# --- secrets ----------------------------------------------------------------------------------------------


def test_the_api_key_never_reaches_the_event_log(fake, data_dir, monkeypatch):
    """The deployment's own resources, configured by the environment, with the key seeded there."""
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in ("OFFLOAD_ENV", "DATABASE_URL", "OPENAI_CHAT_MODEL"):
        monkeypatch.delenv(name, raising=False)
    fake.fail_next[CHAT] = [
        Failure(401, body={"error": {"message": f"Incorrect API key provided: {API_KEY}"}})
    ]
    instance = dg.DagsterInstance.ephemeral()

    failed = content_workflow.execute_in_process(
        run_config=PAYLOAD,
        resources=resources_for(paths.environment()),
        instance=instance,
        raise_on_error=False,
    )
    passed = content_workflow.execute_in_process(
        run_config=PAYLOAD, resources=resources_for(paths.environment()), instance=instance
    )

    assert not failed.success and passed.success
    assert all(r.headers["authorization"] == f"Bearer {API_KEY}" for r in fake.requests)  # it was used
    everything = "\n".join(
        dg.serialize_value(entry) for run in (failed, passed) for entry in instance.all_logs(run.run_id)
    ) + "".join(dg.serialize_value(instance.get_run_by_id(run.run_id)) for run in (failed, passed))
    assert "HTTP 401 from" in everything and "Incorrect API key" not in everything  # status, not the text
    assert API_KEY not in everything
