"""The client against a real deployment: ``dagster dev`` (webserver, daemon, code location) started by the
module, once on a SQLite instance and once on a Postgres one (a database made for the run and dropped
after), with offload's embedded instance config and 3 slots per nesting level.

Every client method; payload errors with the CLI's lines; secrets refused; idempotency under 50 threads;
outputs (the video pipeline's too, through the FastAPI example over HTTP); cancel of a queued and of a
running run; replay; batch partial failure; retries as attempts; child runs under tight slots; and, at
the end, an audit of every run the module made: no limit was ever exceeded.
"""

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from benchmarks.support import dagster_deployment
from benchmarks.support.dagster_deployment import DagsterDeployment
from benchmarks.support.postgres import temporary_database
from benchmarks.support.threaded_server import serving_asgi
from benchmarks.support.waiting import free_port, wait_for
from offload.client import IDEMPOTENCY_TAG, Client, Status
from offload.client.idempotency import STALE_CLAIM_SECONDS, IdempotencyStore, keys_table
from offload.errors import (
    InvalidPayloadError,
    RunNotFoundError,
    RunTimeoutError,
    UnknownJobError,
    WebserverUnreachableError,
)
from offload.payload import MAX_PAYLOAD_BYTES, payload_errors
from pipelines.video.payload import VideoPayload

LEVEL_SLOTS = 3
RUN_TIMEOUT = 120


@dataclass
class Deployment:
    services: DagsterDeployment
    client: Client
    idempotency_db: str

    @property
    def samples(self) -> Path:
        path = self.services.data_dir / "samples"  # file:// sources are allowed under it
        path.mkdir(parents=True, exist_ok=True)
        return path


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def deployment(request, tmp_path_factory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp(f"deployment-{request.param}")
    if request.param == "sqlite":
        instance = dagster_deployment.instance_yaml(level_slots=LEVEL_SLOTS)
        yield from _deploy(root, instance, f"sqlite:///{root / 'idempotency.sqlite3'}")
    else:
        with temporary_database() as url:
            storage = dagster_deployment.postgres_storage(url)
            # Production's shape: the idempotency table lives in the instance's database.
            yield from _deploy(root, dagster_deployment.instance_yaml(storage, LEVEL_SLOTS), url)


def _deploy(root: Path, instance: str, idempotency_db: str) -> Iterator[Deployment]:
    # offload dev: its webserver also creates the runs of batch_trigger (offload/runtime/batch_creator.py).
    services = dagster_deployment.start(
        root, instance=instance, env={"OFFLOAD_IDEMPOTENCY_DB": idempotency_db}, cli="offload"
    )
    client = Client(services.url, idempotency_db=idempotency_db)
    try:
        yield Deployment(services, client, idempotency_db)
    finally:
        client.close()
        services.stop()


def video_payload(deployment: Deployment, name: str, seconds: float = 2, **extra):
    from pipelines.video.samples import make_clip

    clip = deployment.samples / f"{name}.mp4"
    if not clip.exists():
        make_clip(clip, seconds=seconds, width=320, height=240)
    return {"video_id": name, "video_url": clip.as_uri(), "user_id": "u1", "user_email": "ada@example.com",
            "formats": ["mp4"]} | extra  # fmt: skip


# -- trigger, retrieve, wait, list ----------------------------------------------------------------------


def test_trigger_returns_at_once_and_the_output_arrives(deployment):
    client = deployment.client
    started = time.monotonic()
    handle = client.trigger("hello_world", {"name": "Ada"}, tags={"team": "growth"})
    assert time.monotonic() - started < 5  # returns once the run is created (and started if it need not wait)
    assert client.retrieve(handle.id).status in (Status.QUEUED, Status.EXECUTING)
    run = client.wait(handle.id, timeout=RUN_TIMEOUT)
    assert run.status is Status.COMPLETED
    assert run.output["message"] == "Hello, Ada!"
    assert run.output["completed_at"].startswith(str(run.created_at.year))
    assert run.created_at <= run.started_at <= run.completed_at
    assert (run.id, run.job, run.attempts, run.error) == (handle.id, "hello_world", 1, None)
    assert run.tags["team"] == "growth" and run.payload == {"name": "Ada"}


def test_trigger_and_wait_and_list(deployment):
    client = deployment.client
    payload = {"user_id": "lister", "email": "l@example.com", "data": {"plan": "pro"}}
    run = client.trigger_and_wait("typed_task", payload, tags={"batch": "list-1"})
    assert run.status is Status.COMPLETED
    record = Path(run.output["record"].removeprefix("file://"))
    assert record.is_file() and '"plan": "pro"' in record.read_text()
    tagged = client.list(tag=("batch", "list-1"))
    assert [r.id for r in tagged] == [run.id] and tagged[0].output == run.output
    # The payload's id is a tag people find the run by in the UI (its email is not).
    assert run.tags["user_id"] == "lister" and "email" not in run.tags
    assert run.id in [r.id for r in client.list(tag=("user_id", "lister"))]
    assert run.id in [r.id for r in client.list(job="typed_task", status="COMPLETED")]
    assert run.id not in [r.id for r in client.list(job="typed_task", status=Status.FAILED)]
    assert len(client.list(limit=1)) == 1


def test_list_by_status_finds_a_run_by_its_latest_attempt(deployment):
    """welcome_user waits durably for its children: its first attempt ends as a Dagster FAILURE (tagged
    offload/suspended) and a later one completes. It is COMPLETED, and listed so, not as FAILED."""
    client = deployment.client
    payload = {"user_id": "list-attempts", "email": "la@example.com", "name": "La"}
    run = client.trigger_and_wait("welcome_user", payload, timeout=RUN_TIMEOUT)
    assert run.status is Status.COMPLETED and run.attempts >= 2, run
    completed = client.list(job="welcome_user", status="COMPLETED", limit=100)
    assert run.id in [r.id for r in completed]
    assert all(r.status is Status.COMPLETED for r in completed)
    assert run.id not in [r.id for r in client.list(job="welcome_user", status=Status.FAILED, limit=100)]


# -- errors -----------------------------------------------------------------------------------------------


def test_bad_payloads_get_the_clis_lines_and_start_nothing(deployment):
    client = deployment.client
    before = len(client.list(job="video_pipeline", limit=100))
    bad = {"video_id": "a/b", "video_url": "ftp://h/v.mp4", "user_id": "ok", "user_email": "nope",
           "formats": ["mp4", "avi"]}  # fmt: skip
    with pytest.raises(InvalidPayloadError) as caught:
        client.trigger("video_pipeline", bad)
    with pytest.raises(ValidationError) as local:
        VideoPayload(**bad)
    assert caught.value.lines == payload_errors(local.value)  # the very lines the CLI prints
    assert str(caught.value).startswith("invalid payload for video_pipeline:\n  video_id = 'a/b': must be")
    with pytest.raises(InvalidPayloadError) as missing:
        client.trigger("video_pipeline", {"video_id": "a", "user_id": "b", "user_email": "c@example.com"})
    assert any('Missing required config entry "video_url"' in line for line in missing.value.lines)
    with pytest.raises(InvalidPayloadError) as huge:  # refused by the client, before it sends anything
        client.trigger("video_pipeline", {"video_id": "huge", "notes": "x" * MAX_PAYLOAD_BYTES})
    assert huge.value.lines == [
        "payload: 3,145,761 bytes is over the 3,145,728-byte limit; put large inputs in storage and pass "
        "their key"
    ]
    assert len(client.list(job="video_pipeline", limit=100)) == before


def test_secrets_and_env_references_never_reach_run_config(deployment, monkeypatch):
    monkeypatch.setenv("BILLING_API_KEY", "sk_live_abcdef123456")
    cases = {
        "api_key": {"user_id": "s", "email": "s@example.com", "data": {"api_key": "x"}},
        "value": {"user_id": "s", "email": "s@example.com", "data": {"note": "sk_live_abcdef123456"}},
        "url": {"user_id": "s", "email": "s@example.com", "data": {"db": "postgres://me:hunter22@db/x"}},
        "env": {"user_id": {"env": "BILLING_API_KEY"}, "email": "s@example.com"},
    }
    for name, payload in cases.items():
        with pytest.raises(InvalidPayloadError) as caught:
            deployment.client.trigger("typed_task", payload)
        assert "sk_live" not in str(caught.value) and "hunter22" not in str(caught.value), name
    with pytest.raises(ValueError, match="holds a secret"):
        deployment.client.trigger("hello_world", {"name": "x"}, tags={"note": "sk_live_abcdef123456"})
    assert deployment.client.list(job="typed_task", tag=("offload/key-limit-1", "records:s")) == []


def test_tags_with_a_reserved_prefix_are_refused_and_create_nothing(deployment):
    client = deployment.client
    marker = f"reserved-{time.time_ns()}"
    for prefix in ("dagster/", ".dagster/", "offload/"):
        with pytest.raises(ValueError) as caught:
            client.trigger("hello_world", {"name": "Ada"}, tags={"case": marker, f"{prefix}mine": "1"})
        assert (
            str(caught.value)
            == f"tags: '{prefix}mine' uses a reserved prefix (dagster/, .dagster/, offload/)"
        )
    assert client.list(tag=("case", marker)) == []
    assert client.list(job="hello_world", tag=("offload/mine", "1")) == []


def test_unknown_job_and_unknown_run(deployment):
    with pytest.raises(UnknownJobError, match=r"unknown job 'no_such_job'.*hello_world"):
        deployment.client.trigger("no_such_job", {})
    with pytest.raises(RunNotFoundError):
        deployment.client.retrieve("00000000-0000-0000-0000-000000000000")


def test_unreachable_webserver_is_named_in_the_error():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(WebserverUnreachableError, match=f"{url} is unreachable.*OFFLOAD_DAGSTER_URL"):
        Client(url).trigger("hello_world", {"name": "x"})


# -- idempotency ------------------------------------------------------------------------------------------


def test_fifty_concurrent_triggers_with_one_key_make_one_run(deployment):
    client, key = deployment.client, f"signup-{time.time_ns()}"
    barrier = threading.Barrier(50)
    handles = []

    def trigger() -> None:
        barrier.wait()
        handles.append(client.trigger("hello_world", {"name": "Once"}, idempotency_key=key))

    threads = [threading.Thread(target=trigger) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(handles) == 50 and len({h.id for h in handles}) == 1
    assert sum(not h.existing for h in handles) == 1
    assert [r.id for r in client.list(tag=(IDEMPOTENCY_TAG, key))] == [handles[0].id]
    client.wait(handles[0].id, timeout=RUN_TIMEOUT)
    again = client.trigger("hello_world", {"name": "Once"}, idempotency_key=key)  # completed: same run
    assert (again.id, again.existing) == (handles[0].id, True)


def test_a_trigger_that_died_after_launching_is_recovered_not_repeated(deployment):
    client, key = deployment.client, f"crash-{time.time_ns()}"
    launched = client.trigger("hello_world", {"name": "Crash"}, idempotency_key=key)
    # As if that caller had died between creating the run and recording it, long enough ago to be stale.
    store = IdempotencyStore(deployment.idempotency_db)
    with store.engine.begin() as tx:
        tx.execute(sa.update(keys_table).where(keys_table.c.key == key).values(
            run_id=None, claimed_at=time.time() - STALE_CLAIM_SECONDS - 1))  # fmt: skip
    store.close()
    again = client.trigger("hello_world", {"name": "Crash"}, idempotency_key=key)
    assert (again.id, again.existing) == (launched.id, True)
    assert [r.id for r in client.list(tag=(IDEMPOTENCY_TAG, key))] == [launched.id]


def test_a_failed_run_clears_its_key(deployment):
    client, key = deployment.client, f"video-{time.time_ns()}"
    missing = video_payload(deployment, "fails") | {"video_url": (deployment.samples / "gone.mp4").as_uri()}
    first = client.trigger("video_pipeline", missing, idempotency_key=key)
    failed = client.wait(first.id, timeout=RUN_TIMEOUT)
    assert failed.status is Status.FAILED and failed.output is None
    assert failed.error.startswith("download:") and "video_url" in failed.error
    second = client.trigger("video_pipeline", missing, idempotency_key=key)
    assert second.id != first.id and not second.existing
    client.cancel(second.id)


# -- cancel, replay, batches, attempts --------------------------------------------------------------------


def test_a_queued_run_and_a_running_run_are_canceled(deployment):
    """Two long videos of one user hold that user's two video slots, so a third waits in the queue (a run
    with room would start at once: offload/runtime/coordinator.py): wait times out on it, and it is canceled
    without ever starting; then a running one is interrupted."""
    client = deployment.client
    payload = video_payload(deployment, "long", seconds=20, formats=["webm"], user_id="canceler")
    running = [client.trigger("video_pipeline", payload | {"video_id": f"long-{n}"}) for n in range(2)]
    for handle in running:
        started = lambda h=handle: client.retrieve(h.id).started_at is not None  # noqa: E731
        wait_for(started, RUN_TIMEOUT, "the run to start")
    queued = client.trigger("video_pipeline", payload | {"video_id": "long-queued"})
    with pytest.raises(RunTimeoutError, match="did not finish within"):
        client.wait(queued.id, timeout=0.05)
    assert client.retrieve(queued.id).status is Status.QUEUED
    client.cancel(queued.id)
    canceled = client.wait(queued.id, timeout=30)
    assert canceled.status is Status.CANCELED and canceled.started_at is None
    for handle in running:
        client.cancel(handle.id)
    for handle in running:
        run = client.wait(handle.id, timeout=RUN_TIMEOUT)
        assert run.status is Status.CANCELED and run.output is None
    assert not (deployment.services.data_dir / "storage" / "videos" / "canceler").exists()


def test_replay_runs_the_same_payload_again(deployment):
    client = deployment.client
    original = client.trigger_and_wait("hello_world", {"name": "Grace"}, tags={"source": "replay-test"})
    handle = client.replay(original.id)
    assert handle.id != original.id
    replayed = client.wait(handle.id, timeout=RUN_TIMEOUT)
    assert replayed.status is Status.COMPLETED and replayed.output["message"] == "Hello, Grace!"
    assert replayed.payload == original.payload
    assert replayed.tags["source"] == "replay-test" and replayed.tags["offload/replay_of"] == original.id
    client.cancel(original.id)  # finished: nothing to cancel, no error
    assert client.retrieve(original.id).status is Status.COMPLETED


def test_replay_keeps_attempts_and_concurrency_key(deployment):
    client = deployment.client
    payload = {"user_id": "replayer", "email": "r@example.com", "data": {"n": 1}}
    original = client.trigger_and_wait(
        "typed_task", payload, max_attempts=2, concurrency_key="k", timeout=RUN_TIMEOUT
    )
    assert original.status is Status.COMPLETED
    replayed = client.wait(client.replay(original.id).id, timeout=RUN_TIMEOUT)
    assert replayed.status is Status.COMPLETED and replayed.id != original.id
    assert replayed.payload == payload and replayed.tags["offload/replay_of"] == original.id
    for run in (original, replayed):
        tags = run.tags
        assert (tags["dagster/max_retries"], tags["dagster/retry_on_asset_or_op_failure"]) == ("1", "true")
        assert (tags["offload/concurrency_key"], tags["offload/key-limit-1"]) == ("k", "records:k")


def test_batch_trigger_creates_the_good_items_and_reports_each_bad_one(deployment):
    client = deployment.client
    payloads = [
        {"name": "One"},
        {"name": "   "},
        {"name": "Two"},
        {"nam": "typo"},
        {"name": "x", "token": "t"},
    ]
    result = client.batch_trigger("hello_world", payloads)
    assert len(result) == 5 and len(result.runs) == 2
    assert sorted(result.errors) == [1, 3, 4]
    assert result.errors[1].lines == ["name = '   ': must be 1-100 characters, not only spaces"]
    assert any('unexpected config entry "nam"' in line for line in result.errors[3].lines)
    assert "looks like a secret" in result.errors[4].lines[0]
    outputs = [client.wait(handle.id, timeout=RUN_TIMEOUT).output["message"] for handle in result.runs]
    assert outputs == ["Hello, One!", "Hello, Two!"]
    with pytest.raises(ValueError, match="at most 1,000"):
        client.batch_trigger("hello_world", [{"name": "n"}] * 1001)


def test_max_attempts_retries_and_counts_attempts(deployment):
    client = deployment.client
    missing = video_payload(deployment, "retried") | {
        "video_url": (deployment.samples / "gone2.mp4").as_uri()
    }
    handle = client.trigger("video_pipeline", missing, max_attempts=2)
    run = client.wait(handle.id, timeout=RUN_TIMEOUT)
    assert (run.id, run.status, run.attempts) == (handle.id, Status.FAILED, 2)
    assert [r.id for r in client.list(job="video_pipeline", tag=("dagster/max_retries", "1"))] == [handle.id]


# -- child runs and concurrency ---------------------------------------------------------------------------


def test_child_runs_return_their_output_even_when_parents_hold_every_slot(deployment):
    """LEVEL_SLOTS parents at once fill level 0 and each waits for children: without per-level slots the
    children could never start."""
    client = deployment.client
    users = [f"child-{n}" for n in range(LEVEL_SLOTS)]
    handles = [client.trigger("welcome_user", {"user_id": u, "email": f"{u}@example.com", "name": u.title()})
               for u in users]  # fmt: skip
    runs = [client.wait(handle.id, timeout=RUN_TIMEOUT) for handle in handles]
    assert [run.status for run in runs] == [Status.COMPLETED] * LEVEL_SLOTS
    for user, run in zip(users, runs, strict=True):
        assert run.output["greeting"] == f"Hello, {user.title()}!"
        assert f"/records/{user}/" in run.output["record"]
    children = client.list(tag=("offload/parent_run", runs[0].id))
    assert sorted(child.job for child in children) == ["hello_world", "typed_task"]
    assert all(child.tags["offload/depth"] == "1" for child in children)


def test_canceling_a_parent_ends_it_and_leaves_no_child_running(deployment):
    client = deployment.client
    parent = client.trigger("welcome_user", {"user_id": "cancel-kids", "email": "k@example.com", "name": "K"})
    children = wait_for(
        lambda: client.list(tag=("offload/parent_run", parent.id)), RUN_TIMEOUT, "a child run"
    )
    client.cancel(parent.id)
    assert client.wait(parent.id, timeout=RUN_TIMEOUT).status is Status.CANCELED
    for child in [*children, *client.list(tag=("offload/parent_run", parent.id))]:
        assert client.wait(child.id, timeout=RUN_TIMEOUT).status in (Status.CANCELED, Status.COMPLETED)
    # Whether a child finishes before the cancel reaches it is a race on a busy machine; that every child
    # the interrupted parent started is canceled is certain in tests/test_children.py.


def test_queue_and_key_limits_hold(deployment):
    client = deployment.client
    same_user = [
        client.trigger("typed_task", {"user_id": "limited", "email": "l@example.com"}) for _ in range(2)
    ]
    items = [{"email": f"p{n}@example.com"} for n in range(200)]
    batches = [client.trigger("batch_processor", {"items": items, "batch_size": 100}) for _ in range(3)]
    runs = [client.wait(handle.id, timeout=RUN_TIMEOUT) for handle in same_user + batches]
    assert all(run.status is Status.COMPLETED for run in runs)
    assert max_overlap(runs[:2]) == 1  # records: one run per user at a time
    assert max_overlap(runs[2:]) <= 2  # batch: two at a time


def max_overlap(runs) -> int:
    edges = sorted(
        [(run.started_at.timestamp(), 1) for run in runs]
        + [(run.completed_at.timestamp(), -1) for run in runs]
    )
    most = now = 0
    for _, change in edges:  # an end sorts before a start at the same instant
        now += change
        most = max(most, now)
    return most


# -- the example web app ----------------------------------------------------------------------------------


def test_fastapi_example_over_http(deployment):
    from examples.fastapi_app import create_app

    with serving_asgi(create_app(deployment.client), "fastapi-example", startup_timeout=30) as port:
        base = f"http://127.0.0.1:{port}"
        body = video_payload(deployment, "web", user_id="web_user")
        accepted = httpx.post(
            f"{base}/api/upload", json=body, headers={"Idempotency-Key": "web-1"}, timeout=30
        )
        assert accepted.status_code == 202, accepted.text
        task_id = accepted.json()["task_id"]
        assert accepted.json()["message"] == "Processing started"
        again = httpx.post(f"{base}/api/upload", json=body, headers={"Idempotency-Key": "web-1"}, timeout=30)
        assert again.json()["task_id"] == task_id

        def finished():
            status = httpx.get(f"{base}/api/status/{task_id}", timeout=30).json()
            return status if status["status"] in {s.value for s in Status if s.is_final} else None

        status = wait_for(finished, RUN_TIMEOUT, "the upload to be processed")
        assert status["status"] == "COMPLETED" and status["id"] == task_id
        assert set(status["output"]["outputs"]) == {"mp4", "thumbnail"}
        assert status["output"]["video_id"] == "web" and status["created_at"] <= status["completed_at"]
        refused = httpx.post(f"{base}/api/upload", json=body | {"user_email": "nope"}, timeout=30)
        assert refused.status_code == 422
        [line] = refused.json()["detail"]["errors"]
        assert line.startswith("user_email = 'nope': must be an email address like name@example.com")
        assert (
            httpx.get(f"{base}/api/status/00000000-0000-0000-0000-000000000000", timeout=30).status_code
            == 404
        )


# -- audit: the last test of the module -------------------------------------------------------------------


def test_no_limit_was_ever_exceeded(deployment):
    """Every run this module made, by the tags the run queue limits: never more in progress than allowed."""
    query = "{ runsOrError { ... on Runs { results { runId startTime endTime tags { key value } } } } }"
    runs = httpx.post(f"{deployment.services.url}/graphql", json={"query": query}, timeout=30).json()
    intervals: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for run in runs["data"]["runsOrError"]["results"]:
        if run["startTime"] is None:
            continue
        for tag in run["tags"]:
            if tag["key"] == "offload/depth" or tag["key"].startswith(
                ("offload/limit-", "offload/key-limit-")
            ):
                intervals[(tag["key"], tag["value"])].append(
                    (run["startTime"], run["endTime"] or time.time())
                )
    assert intervals[("offload/depth", "0")] and intervals[("offload/depth", "1")]
    for (key, value), spans in intervals.items():
        limit = LEVEL_SLOTS if key == "offload/depth" else int(key.rsplit("-", 1)[1])
        edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
        running = most = 0
        for _, change in edges:
            running += change
            most = max(most, running)
        assert most <= limit, f"{most} runs with {key}={value} at once (limit {limit})"
