"""No secret leaks: a real deployment with fake secrets in its environment, every kind of run, then a search.

``dagster dev`` (webserver, daemon, code location) and the webhook gateway start with fake values of every
secret offload knows (the OpenAI and Resend keys, the Slack token, the webhook signing secrets, a password
inside ``DATABASE_URL``, the client's API token). The client triggers jobs that succeed and jobs that fail
(a refused fetch, a payload error), the gateway receives signed Stripe, GitHub and Clerk webhooks that
become runs, and then every byte the deployment wrote (run storage and event log, compute logs, the outbox,
stored files, the services' own logs) and everything the client can read back (run config as the UI shows
it, event messages, errors, outputs) is searched for each secret: zero occurrences.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.support import dagster_deployment, services
from benchmarks.support.http_server import LocalHTTPServer, body
from benchmarks.support.postgres import temporary_database
from benchmarks.support.waiting import free_port, wait_for
from benchmarks.support.webhooks import (
    SECRETS_ENV,
    body_of,
    clerk_event,
    clerk_headers,
    github_headers,
    github_push,
    stripe_event,
    stripe_headers,
)
from offload.client import Client, Status
from offload.client.transport import credentials
from offload.errors import ClientError
from tests.support.openai_server import openai_server

DB_PASSWORD = "pw-leaktest-DB-3e1f9"
SECRETS = {
    "OPENAI_API_KEY": "sk-leaktest-OPENAI-7f3a9c2d",
    "RESEND_API_KEY": "re_leaktest_RESEND_51b2e8",
    "SLACK_BOT_TOKEN": "xoxb-leaktest-SLACK-8842",
    "OFFLOAD_API_TOKEN": "tok-leaktest-API-0c4d",
    "AWS_SECRET_ACCESS_KEY": "leaktest-AWS-SECRET-19ab",
    **SECRETS_ENV,
}
RUN_TIMEOUT = 240


def needles() -> dict[str, bytes]:
    found = {name: value.encode() for name, value in SECRETS.items()}
    found["DATABASE_URL password"] = DB_PASSWORD.encode()
    return found


def search(haystack: bytes, where: str) -> list[str]:
    return [f"{name} in {where}" for name, value in needles().items() if value in haystack]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    root = tmp_path_factory.mktemp("leaks")
    with (
        temporary_database() as database,
        openai_server() as ai,
        LocalHTTPServer({"/status": body(b"ok")}) as allowed,
        LocalHTTPServer({"/": body(b"<h1>never fetched</h1>")}) as refused,
    ):
        user_url = database.replace("postgres@", f"postgres:{DB_PASSWORD}@")  # trust auth ignores it
        env = {**SECRETS, "DATABASE_URL": user_url, "OPENAI_BASE_URL": ai.url,
               "OFFLOAD_FETCH_ALLOW_HOSTS": allowed.origin}  # fmt: skip
        deployment = dagster_deployment.start(root, env=env, instance=dagster_deployment.instance_yaml())
        gateway = None
        try:
            port = free_port()
            gateway_env = {**deployment.env, "OFFLOAD_WEBHOOK_LAUNCH": "immediate"}
            gateway = services.gateway(gateway_env, port, root / "gateway.log").start()
            wait_for(lambda: services.gateway_ready(port, "ready"), 180, "the gateway's launcher")
            yield {
                "root": root,
                "url": deployment.url,
                "gateway": port,
                "allowed": allowed,
                "refused": refused,
            }
        finally:
            if gateway is not None:
                gateway.stop()
            deployment.stop()


def _jobs(stack: dict[str, object], samples: Path) -> list[tuple[str, dict[str, Any], Status]]:
    from pipelines.video.samples import make_clip

    clip = make_clip(samples / "clip.mp4", seconds=1)
    allowed, refused = stack["allowed"], stack["refused"]
    assert isinstance(allowed, LocalHTTPServer) and isinstance(refused, LocalHTTPServer)
    user = {"user_id": "user_7", "email": "ada@example.com"}
    return [
        ("hello_world", {"name": "Ada"}, Status.COMPLETED),
        ("typed_task", {**user, "data": {"plan": "pro"}}, Status.COMPLETED),
        ("send_email", {"to": "ada@example.com", "subject": "Hi", "html": "<p>Hi</p>"}, Status.COMPLETED),
        ("welcome_user", {**user, "name": "Ada"}, Status.COMPLETED),
        ("generate_content", {"topic": "Tides", "length": "short", "user_id": "user_7"}, Status.COMPLETED),
        (
            "video_pipeline",
            {
                "video_id": "v1",
                "video_url": clip.as_uri(),
                "user_id": "user_7",
                "user_email": "ada@example.com",
                "formats": ["mp4"],
            },
            Status.COMPLETED,
        ),
        ("resilient_task", {"url": allowed.url("/status"), "method": "GET"}, Status.COMPLETED),
        # Refused by the SSRF guard (loopback, not allow-listed): an error message that names a URL.
        ("scrape_websites", {"urls": [refused.url("/")], "selector": "h1"}, Status.FAILED),
    ]


def test_no_secret_appears_anywhere(stack: dict[str, object]) -> None:
    root = stack["root"]
    assert isinstance(root, Path)
    # The client sends its token on every request (no proxy here: the webserver ignores it, must not log it).
    token = credentials({"OFFLOAD_API_TOKEN": SECRETS["OFFLOAD_API_TOKEN"]})
    client = Client(str(stack["url"]), auth=token)
    seen: list[str] = []
    try:
        handles = [
            (client.trigger(job, payload).id, expected)
            for job, payload, expected in _jobs(stack, root / "data" / "samples")
        ]
        try:
            client.trigger("hello_world", {"name": 3, "extra": True})
        except ClientError as error:
            seen += search(str(error).encode(), "a payload error")
        handles += _webhooks(int(str(stack["gateway"])), client)
        for run_id, expected in handles:
            run = client.wait(run_id, timeout=RUN_TIMEOUT)
            assert run.status is expected, (run.job, run.status, run.error)
            seen += search(repr(run).encode(), f"the client's view of {run.job}")
            seen += search(_graphql_view(str(stack["url"]), run.id), f"GraphQL of {run.job}")
    finally:
        client.close()
    assert search(f"url=postgresql://u:{DB_PASSWORD}@db".encode(), "a probe") == [
        "DATABASE_URL password in a probe"
    ]
    files = [path for path in root.rglob("*") if path.is_file()]
    assert any(path.suffix == ".err" for path in files)  # the compute logs are among what is searched
    for path in files:
        seen += search(path.read_bytes(), str(path.relative_to(root)))
    assert seen == []


def _webhooks(port: int, client: Client) -> list[tuple[str, Status]]:
    """Signed deliveries of each provider; their runs as handles, found by the event tag."""
    deliveries = []
    stripe = body_of(stripe_event())
    deliveries.append(("stripe", stripe, stripe_headers(stripe)))
    github = body_of(github_push())
    deliveries.append(("github", github, github_headers(github, delivery=str(uuid.uuid4()))))
    clerk = body_of(clerk_event(user_id="user_leak1"))
    deliveries.append(("clerk", clerk, clerk_headers(clerk)))
    runs: list[tuple[str, Status]] = []
    for provider, payload, headers in deliveries:
        answer = httpx.post(f"http://127.0.0.1:{port}/webhooks/{provider}", content=payload, headers=headers)
        assert answer.status_code == 200, answer.text
        event_id = answer.json()["event_id"]
        tag = ("offload/webhook_event", f"{provider}:{event_id}")
        found = wait_for(partial(client.list, tag=tag, limit=1), 120, f"the {provider} run")
        runs.append((found[0].id, Status.COMPLETED))
    return runs


def _graphql_view(url: str, run_id: str) -> bytes:
    """What the UI shows of a run: its run config (YAML), tags and every event message."""
    query = """query($id: ID!) {
      runOrError(runId: $id) { ... on Run { runConfigYaml tags { key value } } }
      logsForRun(runId: $id, limit: 10000) { ... on EventConnection { events { __typename
        ... on MessageEvent { message } ... on ExecutionStepFailureEvent { error { message stack } }
        ... on RunFailureEvent { error { message stack } } } } }
    }"""
    answer = httpx.post(f"{url}/graphql", json={"query": query, "variables": {"id": run_id}}, timeout=30)
    data = answer.json()["data"]
    assert data["runOrError"]["runConfigYaml"] is not None
    return json.dumps(data).encode()
