"""offload/runtime/ui_guard.py: which requests reach the Dagster UI's server. The pure decision for each rule
(Host
allow-list, same Origin only, GraphQL mutations only by JSON POST), then the middleware in front of a
stand-in app for HTTP and websockets, and ``offload dev``'s hooks into Dagster's dev command."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from offload.runtime import dev_server as dev
from offload.runtime.ui_guard import UIGuard, allowed_hosts, refusal

HOSTS = allowed_hosts({"OFFLOAD_UI_URL": "https://Ops.Acme.example/dagster"})
OWN = "127.0.0.1:3000"
JSON = ("content-type", "application/json")


def check(
    method: str = "POST", path: str = "/graphql", query: str = "", *headers: tuple[str, str], **kw: Any
):
    found = refusal(method, path, query, [("host", OWN), *headers], HOSTS, **kw)
    return None if found is None else (found.status, found.message)


def test_allowed_hosts_are_loopback_and_the_public_ui_name() -> None:
    assert allowed_hosts({}) == {"127.0.0.1", "localhost", "::1"}
    assert allowed_hosts({"OFFLOAD_UI_URL": "https://Ops.Acme.example/dagster"}) == {
        "127.0.0.1", "localhost", "::1", "ops.acme.example"}  # fmt: skip
    with pytest.raises(ValueError, match=r"^OFFLOAD_UI_URL: must be an http:// or https:// URL with a host$"):
        allowed_hosts({"OFFLOAD_UI_URL": "ops.acme.example"})


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:3000",
        "localhost",
        "LOCALHOST:80",
        "[::1]:3000",
        "ops.acme.example",
        "ops.ACME.example:8443",
    ],
)
def test_the_ui_own_names_pass(host: str) -> None:
    assert refusal("POST", "/graphql", "", [("host", host), JSON], HOSTS) is None


@pytest.mark.parametrize(
    "host",
    ["attacker.example", "attacker.example:3000", "127.0.0.1.nip.io", "", "127.0.0.1:x", "a@127.0.0.1"],
)
def test_other_hosts_are_refused_dns_rebinding(host: str) -> None:
    headers = [("host", host), JSON] if host else [JSON]
    found = refusal("POST", "/graphql", "", headers, HOSTS)
    assert found is not None and found.status == 421
    assert found.message.startswith("Host: ") and "OFFLOAD_UI_URL" in found.message
    assert refusal("GET", "/", "", headers, HOSTS, websocket=True) is not None


def test_a_foreign_origin_is_refused_on_every_request_and_websocket() -> None:
    for origin in (
        "http://evil.example",
        "http://127.0.0.1:4000",
        "null",
        "http://127.0.0.1:3000.evil.example",
    ):
        for method, kw in (("POST", {}), ("GET", {"websocket": True})):
            found = check(method, "/graphql", "", ("origin", origin), JSON, **kw)
            assert found is not None and found[0] == 403, (origin, method)
            assert found[1].startswith(f"Origin: {origin} is not this UI's own")
        assert check("GET", "/some/page", "", ("origin", origin)) is not None
    assert check("POST", "/graphql", "", ("origin", f"http://{OWN}"), JSON) is None
    assert check("GET", "/graphql", "", ("origin", f"http://{OWN}"), websocket=True) is None
    assert check("GET", "/graphql", "", websocket=True) is None  # no browser, no Origin


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""]
)
def test_graphql_posts_need_a_json_body(content_type: str) -> None:
    headers = [("content-type", content_type)] if content_type else []
    assert check("POST", "/graphql", "", *headers) == (
        415,
        "Content-Type: GraphQL requests are POSTed as application/json",
    )
    assert check("POST", "/graphql", "", ("content-type", "Application/JSON; charset=utf-8")) is None


def test_get_carries_queries_only() -> None:
    assert check("GET", "/graphql", "") is None  # the GraphiQL page
    assert check("GET", "/graphql", urlencode({"query": "{ version }"})) is None
    for document in ("mutation { launchRun }", "query a { version } mutation b { x }", "subscription { s }"):
        found = check("GET", "/graphql/", urlencode({"query": document}))
        assert found == (405, "query: mutations and subscriptions only by POST with application/json"), (
            document
        )
    assert check("GET", "/graphql", urlencode({"query": "{ version"}))[0] == 400
    assert check("PUT", "/graphql", "", JSON)[0] == 405


def test_a_header_sent_twice_is_refused() -> None:
    assert check("POST", "/graphql", "", ("host", "evil.example"), JSON) == (400, "host: sent more than once")
    assert check("POST", "/graphql", "", JSON, ("content-type", "text/plain"))[0] == 400


# -- the middleware ----------------------------------------------------------------------------------------


async def _answer(request: Any) -> PlainTextResponse:
    return PlainTextResponse("reached")


async def _socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("log frame")
    await websocket.close()


@pytest.fixture
def client() -> TestClient:
    app = Starlette(
        routes=[Route("/graphql", _answer, methods=["GET", "POST"]), WebSocketRoute("/graphql", _socket)]
    )
    return TestClient(UIGuard(app, HOSTS), base_url=f"http://{OWN}")


def test_the_middleware_answers_refusals_and_passes_the_rest(client: TestClient) -> None:
    assert client.post("/graphql", json={"query": "{ version }"}).text == "reached"
    refused = client.post(
        "/graphql", content=b'{"query":"mutation{x}"}', headers={"content-type": "text/plain"}
    )
    assert refused.status_code == 415 and refused.text.startswith("Content-Type: ")
    rebound = client.get("/graphql", headers={"host": "attacker.example:3000"})
    assert rebound.status_code == 421 and "reached" not in rebound.text
    with client.websocket_connect(f"ws://{OWN}/graphql", headers={"origin": f"http://{OWN}"}) as socket:
        assert socket.receive_text() == "log frame"
    foreign = {"origin": "http://evil.example"}
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        client.websocket_connect(f"ws://{OWN}/graphql", headers=foreign),
    ):
        pass
    assert closed.value.code == 1008


def test_offload_dev_refuses_to_run_if_dagster_starts_its_daemon_without_the_guarded_webserver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a Dagster upgrade that renamed the webserver's module would do: nothing starts unguarded."""
    import dagster._cli.dev as dagster_dev
    from dagster._cli import cli

    started: list[list[str]] = []

    def record(parts: list[str], **kwargs: Any) -> None:
        started.append(parts)

    monkeypatch.setattr(dagster_dev, "open_ipc_subprocess", record)

    def fake_cli_main(**kwargs: Any) -> None:
        dagster_dev.open_ipc_subprocess(["python", "-m", "dagster_webserver_v2"])
        dagster_dev.open_ipc_subprocess(["python", "-m", "dagster._daemon", "run"])

    monkeypatch.setattr(cli, "main", fake_cli_main)
    with pytest.raises(dev.UnguardedWebserverError, match="daemon before a webserver offload could guard"):
        dev.main([])
    assert started == [["python", "-m", "dagster_webserver_v2"]]  # the daemon never started

    started.clear()
    monkeypatch.setattr(dagster_dev, "open_ipc_subprocess", record)

    def fake_cli_main_ok(**kwargs: Any) -> None:
        dagster_dev.open_ipc_subprocess(["python", "-m", "dagster_webserver", "--port", "1"])
        dagster_dev.open_ipc_subprocess(["python", "-m", "dagster._daemon", "run"])

    monkeypatch.setattr(cli, "main", fake_cli_main_ok)
    dev.main([])
    assert started == [
        ["python", "-m", "offload.runtime.dev_server", "--port", "1"],
        ["python", "-m", "dagster._daemon", "run"],
    ]


def test_offload_dev_stops_at_once_on_a_bad_ui_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dagster._cli import cli

    monkeypatch.setenv("OFFLOAD_UI_URL", "ops.acme.example")
    monkeypatch.setattr(cli, "main", lambda **kwargs: pytest.fail("dagster dev started"))
    with pytest.raises(SystemExit) as exited:
        dev.main([])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "offload dev: OFFLOAD_UI_URL: must be an http:// or https:// URL with a host\n"
    )
