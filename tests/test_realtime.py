"""Realtime with the real system: ``dagster dev`` (webserver, daemon, code location) and the gateway as
deployed (``python -m offload.webhooks serve``). Metadata a step sets reaches ``Client.subscribe``, the
``AsyncClient``, the gateway's Server-Sent Events and a browser (the FastAPI example's upload page in
headless chromium); public access tokens are scoped, expire, and are refused when missing or tampered."""

import asyncio
import json
import re
import threading
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from benchmarks.support import dagster_deployment
from benchmarks.support.dagster_deployment import DagsterDeployment
from benchmarks.support.services import Service, gateway, gateway_ready
from benchmarks.support.waiting import free_port, wait_for
from offload.client import AsyncClient, Client, Status, create_public_token

SECRET = "realtime-test-secret-0123456789abcdef"
RUN_TIMEOUT = 240
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip


@dataclass
class System:
    services: DagsterDeployment
    gateway: Service
    gateway_url: str
    client: Client

    def video(self, name: str, **extra) -> dict:
        from pipelines.video.samples import make_clip

        samples = self.services.data_dir / "samples"
        samples.mkdir(parents=True, exist_ok=True)
        clip = samples / f"{name}.mp4"
        if not clip.exists():
            make_clip(clip, seconds=2, width=320, height=240)
        return {"video_id": name, "video_url": clip.as_uri(), "user_id": "u1",
                "user_email": "ada@example.com", "formats": ["mp4"]} | extra  # fmt: skip


@pytest.fixture(scope="module")
def system(tmp_path_factory) -> Iterator[System]:
    root = tmp_path_factory.mktemp("realtime")
    keys = f"sqlite:///{root / 'idempotency.sqlite3'}"  # shared with offload dev's batch creator
    services = dagster_deployment.start(
        root,
        env={"OFFLOAD_REALTIME_SECRET": SECRET, "OFFLOAD_IDEMPOTENCY_DB": keys},
        deadline=300,
        cli="offload",
    )
    port = free_port()
    env = services.env | {"OFFLOAD_WEBHOOK_LAUNCH": "sensor", "OFFLOAD_REALTIME_INTERVAL": "0.1"}
    service = gateway(env, port, root / "gateway.log").start()
    client = Client(services.url, idempotency_db=keys)
    try:
        wait_for(lambda: gateway_ready(port, "off"), 120, "the gateway to answer")
        yield System(services, service, f"http://127.0.0.1:{port}", client)
    finally:
        client.close()
        service.stop()
        services.stop()


def sse_events(url: str, deadline: float = RUN_TIMEOUT) -> list[tuple[str, dict]]:
    """Every event of a stream until the gateway ends it."""
    events: list[tuple[str, dict]] = []
    with httpx.stream("GET", url, timeout=httpx.Timeout(deadline, connect=10)) as answer:
        assert answer.status_code == 200, answer.read()
        assert answer.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in answer.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name is not None:
                events.append((name, json.loads(line[6:])))
                name = None
    return events


def test_metadata_set_in_steps_reaches_subscribe_the_gateway_stream_and_retrieve(system, monkeypatch):
    monkeypatch.setenv("OFFLOAD_REALTIME_SECRET", SECRET)
    handle = system.client.trigger("video_pipeline", system.video("live"))
    token = system.client.create_public_token(runs=[handle.id], expires="15m")
    streamed: list[tuple[str, dict]] = []
    reader = threading.Thread(
        target=lambda: streamed.extend(
            sse_events(f"{system.gateway_url}/realtime/runs/{handle.id}?token={token}")
        )
    )
    reader.start()
    snapshots = list(system.client.subscribe(handle.id, poll_interval=0.2, timeout=RUN_TIMEOUT))
    reader.join(timeout=RUN_TIMEOUT)
    assert not reader.is_alive(), "the stream of a finished run must end"

    final = snapshots[-1]
    assert final.status is Status.COMPLETED, final.error
    expected = {"step": "done", "progress": 100, "renditions_done": 2}  # mp4 and the thumbnail
    assert final.metadata == expected
    assert set(final.output["outputs"]) == {"mp4", "thumbnail"}
    assert any(s.status is Status.EXECUTING and s.metadata.get("step") for s in snapshots[:-1])
    assert system.client.retrieve(handle.id).metadata == expected

    runs = [data for name, data in streamed if name == "run"]
    assert streamed[-1][0] == "end"
    assert runs[-1]["status"] == "COMPLETED" and runs[-1]["metadata"] == expected
    assert set(runs[-1]["output"]["outputs"]) == {"mp4", "thumbnail"}
    # Progress arrived while the run worked, not only at the end.
    assert any(r["status"] == "EXECUTING" and "progress" in r["metadata"] for r in runs[:-1]), runs
    # A finished run's stream sends its final snapshot at once, then ends.
    again = sse_events(f"{system.gateway_url}/realtime/runs/{handle.id}?token={token}", 60)
    assert [name for name, _ in again] == ["run", "end"] and again[0][1] == runs[-1]


def test_public_tokens_are_scoped_expire_and_are_refused_when_missing_or_tampered(system):
    client = system.client
    mine = client.trigger("hello_world", {"name": "Ada"}, tags={"customer": "c9"})
    other = client.trigger("hello_world", {"name": "Bob"})
    base = f"{system.gateway_url}/realtime/runs"
    token = create_public_token(runs=[mine.id], secret=SECRET)

    def status(url: str, **headers: str) -> int:
        with httpx.stream("GET", url, headers=headers, timeout=30) as answer:
            return answer.status_code

    assert status(f"{base}/{mine.id}") == 401
    assert status(f"{base}/{mine.id}?token={token[:-2]}xx") == 401
    assert status(f"{base}/{mine.id}?token={create_public_token(runs=[mine.id], secret='x' * 40)}") == 401
    assert status(f"{base}/{other.id}?token={token}") == 404  # a token for run A reads nothing of run B
    assert status(f"{base}/{mine.id}", Authorization=f"Bearer {token}") == 200
    short = create_public_token(runs=[mine.id], expires=1, secret=SECRET)
    wait_for(lambda: status(f"{base}/{mine.id}?token={short}") == 401, 30, "the short token to expire")

    by_tag = create_public_token(tags={"customer": "c9"}, expires="1m", secret=SECRET)
    assert status(f"{base}/{other.id}?token={by_tag}") == 404
    events = sse_events(f"{base}/{mine.id}?token={by_tag}")
    assert events[-2][1]["id"] == mine.id and events[-2][1]["status"] == "COMPLETED"

    seen: list[dict] = []
    with httpx.stream("GET", f"{base}?token={by_tag}", timeout=60) as answer:
        assert answer.status_code == 200
        for line in answer.iter_lines():
            if line.startswith("data: ") and '"id"' in line:
                seen.append(json.loads(line[6:]))
                break
    assert seen[0]["id"] == mine.id  # the tag's runs only
    log = Path(system.gateway.log).read_text()
    assert token not in log and by_tag not in log and short not in log


def test_async_client_has_the_clients_calls(system, monkeypatch):
    monkeypatch.setenv("OFFLOAD_REALTIME_SECRET", SECRET)

    async def scenario() -> None:
        client = AsyncClient.from_client(system.client)
        handle = await client.trigger("hello_world", {"name": "Async"}, tags={"flow": "async"})
        seen = [run async for run in client.subscribe(handle.id, poll_interval=0.2)]
        assert seen[-1].status is Status.COMPLETED and seen[-1].output["message"] == "Hello, Async!"
        assert (await client.wait(handle.id, timeout=60)).id == handle.id
        assert (await client.retrieve(handle.id)).status is Status.COMPLETED
        assert [run.id for run in await client.list(tag=("flow", "async"))] == [handle.id]
        batch = await client.batch_trigger("hello_world", [{"name": "A"}, {"name": 3}])
        assert len(batch.runs) == 1 and list(batch.errors) == [1]
        replayed = await client.replay(handle.id)
        assert (await client.wait(replayed.id, timeout=RUN_TIMEOUT)).output["message"] == "Hello, Async!"
        await client.cancel(handle.id)  # a finished run: nothing to do
        by_tag = [run async for run in client.subscribe(tag=("flow", "async"), poll_interval=0.2, timeout=5)]
        assert {run.id for run in by_tag} >= {handle.id}
        assert client.create_public_token(runs=[handle.id])

    asyncio.run(scenario())


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} missing (scripts/test.sh installs it)")
def test_the_upload_page_shows_live_progress_and_the_result_links(system, monkeypatch):
    import uvicorn
    from playwright.sync_api import expect, sync_playwright

    from examples.fastapi_app import create_app

    monkeypatch.setenv("OFFLOAD_REALTIME_SECRET", SECRET)
    app = create_app(AsyncClient.from_client(system.client), gateway_url=system.gateway_url)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 30, "the example app to start")
        payload = system.video("browser")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page()
                # Every state the page shows, in order (what the user saw while the run worked).
                page.add_init_script("""new MutationObserver(() => {
                    const s = document.getElementById('state');
                    if (s) (window.seen = window.seen || []).push(s.textContent); })
                    .observe(document, {subtree: true, childList: true, characterData: true});""")
                page.goto(f"http://127.0.0.1:{server.config.port}/")
                for field in ("video_url", "video_id", "user_id", "user_email"):
                    page.fill(f"input[name={field}]", payload[field])
                page.click("button[type=submit]")
                done = re.compile("^COMPLETED")
                expect(page.locator("#state")).to_have_text(done, timeout=RUN_TIMEOUT * 1000)
                links = page.locator("#links a")
                # The job's default formats, each a link, and the thumbnail.
                assert {"mp4", "thumbnail"} <= set(links.all_text_contents())
                shown = {a.text_content(): a.get_attribute("href") for a in links.all()}
                videos = system.client.list("video_pipeline")
                [run] = [r for r in videos if r.payload["video_id"] == "browser"]
                assert shown == run.output["outputs"]  # the result's links, as the run returned them
                assert page.eval_on_selector("#bar", "bar => bar.value") == 100
                seen = page.evaluate("window.seen || []")
                assert any(text.startswith("EXECUTING") and "%" in text for text in seen), seen
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_a_change_wakes_only_the_streams_that_watch_it():
    """Each stream has its own wake-up: a change of run a (or of a tag's runs) wakes the streams watching
    it and no other (one shared event woke all 500 streams at every change)."""
    from offload.webhooks.realtime import Hub

    async def scenario() -> tuple[bool, bool, bool]:
        hub = Hub(lambda: None, interval=0.01)  # type: ignore[arg-type,return-value]
        changes: list[set[Hashable]] = [{"a"}, {("tag", "user", "u1")}]

        def poll(runs: list[str], tags: list[tuple[str, str]]) -> set[Hashable]:
            return changes.pop(0) if changes else set()

        hub.poll = poll  # type: ignore[method-assign]
        with (
            hub.watching(["a"], []) as wake_a,
            hub.watching(["b"], []) as wake_b,
            hub.watching([], [("user", "u1")]) as wake_tag,
        ):
            hub.start()
            woke_a = await hub.changed(wake_a, 10)
            woke_tag = await hub.changed(wake_tag, 10)
            await hub.stop()
            return woke_a, woke_tag, wake_b.is_set()

    assert asyncio.run(scenario()) == (True, True, False)


def test_a_family_version_changes_with_its_tags_status_and_new_attempts():
    """What lets the realtime poll skip unchanged runs (offload/runtime/run_changes.py)."""
    import dagster as dg

    from offload.runtime.run_changes import family_versions

    with dg.instance_for_test() as instance:
        first = dg.DagsterRun(job_name="j", status=dg.DagsterRunStatus.STARTED)
        other = dg.DagsterRun(job_name="j", status=dg.DagsterRunStatus.STARTED)
        instance.add_run(first)
        instance.add_run(other)
        before = family_versions(instance, [first.run_id, other.run_id])
        assert before is not None and set(before) == {first.run_id, other.run_id}
        assert family_versions(instance, [first.run_id, other.run_id]) == before  # nothing changed
        instance.add_run_tags(first.run_id, {"offload/metadata": '{"progress":1}'})
        tagged = family_versions(instance, [first.run_id, other.run_id])
        assert tagged is not None and tagged[first.run_id] != before[first.run_id]
        assert tagged[other.run_id] == before[other.run_id]
        retry = dg.DagsterRun(
            job_name="j", root_run_id=first.run_id, parent_run_id=first.run_id,
            tags={"dagster/root_run_id": first.run_id, "dagster/parent_run_id": first.run_id},
        )  # fmt: skip
        instance.add_run(retry)
        retried = family_versions(instance, [first.run_id])
        assert retried is not None and len(retried[first.run_id]) == 2


def test_the_poll_reads_every_attempt_of_a_changed_family_and_only_changed_ones():
    """The poll reads records by the attempt ids the family versions name: a new retry shows in the
    family's snapshot (attempts 2, the retry's status), and an unchanged family is not read again."""
    import dagster as dg

    from offload.webhooks.realtime import Hub

    with dg.instance_for_test() as instance:
        first = dg.DagsterRun(job_name="j", status=dg.DagsterRunStatus.STARTED)
        quiet = dg.DagsterRun(job_name="j", status=dg.DagsterRunStatus.STARTED)
        instance.add_run(first)
        instance.add_run(quiet)
        hub = Hub(lambda: instance, interval=1)
        assert hub.poll([first.run_id, quiet.run_id], []) == {first.run_id, quiet.run_id}
        assert json.loads(hub.snapshots[first.run_id])["attempts"] == 1
        instance.handle_run_event(
            first.run_id,
            dg.DagsterEvent(dg.DagsterEventType.RUN_FAILURE.value, job_name="j", message="boom"),
        )
        retry = dg.DagsterRun(
            job_name="j", root_run_id=first.run_id, parent_run_id=first.run_id,
            status=dg.DagsterRunStatus.STARTED,
            tags={"dagster/root_run_id": first.run_id, "dagster/parent_run_id": first.run_id},
        )  # fmt: skip
        instance.add_run(retry)
        assert hub.poll([first.run_id, quiet.run_id], []) == {first.run_id}
        snapshot = json.loads(hub.snapshots[first.run_id])
        assert snapshot["attempts"] == 2 and snapshot["status"] == "EXECUTING"
