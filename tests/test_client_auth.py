"""Who can reach the Dagster webserver: the client's credentials and the proxy in deploy/proxy/.

The client sends ``OFFLOAD_API_TOKEN`` as a bearer token or ``OFFLOAD_API_USER`` / ``OFFLOAD_API_PASSWORD``
as basic auth on every GraphQL request, and says which setting to fix on a 401/403 without ever showing
the secret. The nginx configuration is rendered as the official image renders it and run for real in
front of a stand-in upstream on loopback: without credentials, or with wrong ones, nothing reaches the
upstream; with either kind of right ones the request passes, stripped of its ``Authorization`` header.
Tokens compare exactly (letter case too), password guessing is rate-limited per address, and what a page
of another site could send (another Origin or Host, a GraphQL mutation by GET, form or ``text/plain``)
is refused before authentication, with the operator's credentials attached.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.support import nginx_proxy
from benchmarks.support.http_server import LocalHTTPServer
from offload.client import Client
from offload.client.transport import GraphQL, credentials
from offload.errors import AuthenticationError, ConfigurationError

TOKEN = "tok_9f8e7d6c5b4a39281706"
USER, PASSWORD = "ops", "pw-Zq81!kRt"
PUBLIC_NAME = "ops.acme.example"


class Upstream:
    """A stand-in for the webserver's /graphql: answers GraphQL-shaped JSON, records Authorization headers."""

    def __init__(self) -> None:
        self.authorization: list[str | None] = []
        self.server = LocalHTTPServer({"/graphql": self._answer})

    def _answer(self, handler: Any) -> None:
        self.authorization.append(handler.headers.get("Authorization"))
        data = json.dumps({"data": {"ok": True}}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    stand_in = Upstream()
    with stand_in.server:
        yield stand_in


# -- the client's credentials -------------------------------------------------------------------------------


def test_credentials_from_the_environment() -> None:
    assert credentials({}) is None
    bearer = credentials({"OFFLOAD_API_TOKEN": TOKEN})
    assert bearer is not None and TOKEN not in repr(bearer)
    assert isinstance(
        credentials({"OFFLOAD_API_USER": USER, "OFFLOAD_API_PASSWORD": PASSWORD}), httpx.BasicAuth
    )


@pytest.mark.parametrize(
    "env, message",
    [
        ({"OFFLOAD_API_TOKEN": TOKEN, "OFFLOAD_API_USER": USER}, r"^OFFLOAD_API_TOKEN: set either it or"),
        ({"OFFLOAD_API_USER": USER}, r"^OFFLOAD_API_USER and OFFLOAD_API_PASSWORD: basic auth needs both$"),
        ({"OFFLOAD_API_PASSWORD": PASSWORD}, r"basic auth needs both$"),
    ],
)
def test_half_or_double_credentials_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        credentials(env)
    assert PASSWORD not in str(caught.value) and TOKEN not in str(caught.value)


def test_a_url_carrying_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(
        ConfigurationError, match=r"^OFFLOAD_DAGSTER_URL: must not carry credentials"
    ) as caught:
        GraphQL(f"http://{USER}:{PASSWORD}@127.0.0.1:3000")
    assert PASSWORD not in str(caught.value)


def test_every_request_carries_the_credentials(upstream: Upstream) -> None:
    url = upstream.server.url("").rstrip("/")
    graphql = GraphQL(url, auth=credentials({"OFFLOAD_API_TOKEN": TOKEN}))
    for _ in range(3):
        assert graphql("{ ok }") == {"ok": True}
    graphql.close()
    graphql = GraphQL(url, auth=credentials({"OFFLOAD_API_USER": USER, "OFFLOAD_API_PASSWORD": PASSWORD}))
    graphql("{ ok }")
    graphql.close()
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert upstream.authorization == [f"Bearer {TOKEN}"] * 3 + [basic]


def test_the_client_reads_its_credentials_from_the_environment(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OFFLOAD_API_TOKEN", TOKEN)
    client = Client(upstream.server.url("").rstrip("/"))
    client._graphql("{ ok }")
    client.close()
    assert upstream.authorization == [f"Bearer {TOKEN}"]


# -- the proxy (nginx, deploy/proxy/) -----------------------------------------------------------------------


class Proxy:
    def __init__(self, port: int, upstream: Upstream, error_log: Path):
        self.port, self.upstream, self.error_log = port, upstream, error_log
        self.url = f"http://127.0.0.1:{port}"

    def graphql(self, auth: httpx.Auth | None) -> GraphQL:
        return GraphQL(self.url, auth=auth, timeout=10)


def _ssha(password: str) -> str:
    """An htpasswd line's hash in nginx's ``{SSHA}`` scheme (salted SHA-1), made without htpasswd."""
    salt = os.urandom(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


@pytest.fixture
def proxy(upstream: Upstream, tmp_path: Path) -> Iterator[Proxy]:
    if nginx_proxy.nginx_executable() is None:
        pytest.skip("nginx is not installed (scripts/test.sh installs nginx-light where it can)")
    with nginx_proxy.run_proxy(
        tmp_path,
        upstream.server.origin,
        htpasswd=f"{USER}:{_ssha(PASSWORD)}\n",
        tokens=f'"~^Bearer {TOKEN}$" off;\n',
        ui_url=f"https://{PUBLIC_NAME}",
    ) as port:
        yield Proxy(port, upstream, tmp_path / "error.log")


def test_without_credentials_the_proxy_answers_401_and_nothing_reaches_the_webserver(proxy: Proxy) -> None:
    with pytest.raises(
        AuthenticationError, match=r"answered HTTP 401: no credentials were sent; set OFFLOAD_API_TOKEN"
    ):
        proxy.graphql(None)("{ ok }")
    raw = httpx.post(f"{proxy.url}/graphql", json={"query": "mutation { launchRun }"})
    assert raw.status_code == 401 and raw.headers["WWW-Authenticate"] == 'Basic realm="offload"'
    assert proxy.upstream.authorization == []


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param(httpx.BasicAuth(USER, "wrong-password"), id="wrong-password"),
        pytest.param(httpx.BasicAuth("intruder", PASSWORD), id="unknown-user"),
        pytest.param(credentials({"OFFLOAD_API_TOKEN": "tok_guessed"}), id="wrong-token"),
        pytest.param(credentials({"OFFLOAD_API_TOKEN": f"{TOKEN}x"}), id="token-with-a-suffix"),
    ],
)
def test_wrong_credentials_are_refused_and_not_echoed(proxy: Proxy, auth: httpx.Auth) -> None:
    with pytest.raises(AuthenticationError, match=r"answered HTTP 401: credentials were refused") as caught:
        proxy.graphql(auth)("{ ok }")
    assert PASSWORD not in str(caught.value) and "tok_" not in str(caught.value)
    assert proxy.upstream.authorization == []


def test_right_credentials_pass_and_stop_at_the_proxy(proxy: Proxy) -> None:
    assert proxy.graphql(credentials({"OFFLOAD_API_TOKEN": TOKEN}))("{ ok }") == {"ok": True}
    basic = credentials({"OFFLOAD_API_USER": USER, "OFFLOAD_API_PASSWORD": PASSWORD})
    assert proxy.graphql(basic)("{ ok }") == {"ok": True}
    assert proxy.upstream.authorization == [None, None]  # the webserver never sees the credentials


def test_the_health_check_needs_no_credentials_and_says_nothing_else(proxy: Proxy) -> None:
    answer = httpx.get(f"{proxy.url}/proxy-health")
    assert answer.status_code == 200 and answer.text == "ok\n"
    assert "nginx/" not in answer.headers.get("Server", "")  # server_tokens off: no version to look up
    assert proxy.upstream.authorization == []


def test_a_token_in_another_letter_case_is_refused(proxy: Proxy) -> None:
    for guess in (TOKEN.upper(), TOKEN.capitalize(), f"bearer {TOKEN}"):
        answer = httpx.post(
            f"{proxy.url}/graphql", json={"query": "{ ok }"}, headers={"Authorization": guess}
        )
        assert answer.status_code == 401, guess
    assert proxy.upstream.authorization == []


BASIC = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
LAUNCH = "mutation { launchRun }"


@pytest.mark.parametrize(
    "method, extra, expected",
    [
        pytest.param("POST", {"Origin": "http://evil.example"}, 403, id="foreign-origin"),
        pytest.param("POST", {"Origin": "null"}, 403, id="null-origin"),
        pytest.param("POST", {"Host": "attacker.example"}, 421, id="rebound-host"),
        pytest.param("POST", {"Host": f"{PUBLIC_NAME}.attacker.example"}, 421, id="lookalike-host"),
        pytest.param("POST", {"Content-Type": "text/plain"}, 405, id="text-plain"),
        pytest.param("POST", {"Content-Type": "application/x-www-form-urlencoded"}, 405, id="form"),
        pytest.param("GET", {}, 405, id="get-with-query"),
    ],
)
def test_what_another_site_could_send_is_refused_even_with_credentials(
    proxy: Proxy, method: str, extra: dict[str, str], expected: int
) -> None:
    headers = BASIC | {"Content-Type": "application/json"} | extra
    if method == "GET":
        answer = httpx.get(f"{proxy.url}/graphql", params={"query": LAUNCH}, headers=headers)
    else:
        answer = httpx.post(f"{proxy.url}/graphql", content=json.dumps({"query": LAUNCH}), headers=headers)
    assert answer.status_code == expected, answer.text
    assert proxy.upstream.server.request_count == 0


def test_the_ui_own_requests_pass(proxy: Proxy) -> None:
    """The UI's page (same Origin), the public name, a charset parameter and the GraphiQL page's plain GET."""
    own = {"Content-Type": "application/json; charset=utf-8", "Origin": f"http://127.0.0.1:{proxy.port}"}
    assert (
        httpx.post(f"{proxy.url}/graphql", json={"query": "{ ok }"}, headers=BASIC | own).status_code == 200
    )
    public = {"Host": PUBLIC_NAME, "Origin": f"https://{PUBLIC_NAME}"}
    assert (
        httpx.post(f"{proxy.url}/graphql", json={"query": "{ ok }"}, headers=BASIC | public).status_code
        == 200
    )
    assert httpx.get(f"{proxy.url}/graphql", headers=BASIC).status_code == 200
    assert proxy.upstream.authorization == [None, None, None]


def test_password_guessing_is_rate_limited_per_address(proxy: Proxy) -> None:
    """At most the burst (200) plus 20 a second are checked; the rest get 429. Tokens are not limited."""
    wrong = {"Authorization": "Basic " + base64.b64encode(f"{USER}:guess".encode()).decode()}
    statuses: list[int] = []
    started = time.monotonic()
    with httpx.Client(base_url=proxy.url, timeout=30) as http, ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: http.get("/graphql", headers=wrong).status_code, range(600)))
    elapsed = time.monotonic() - started
    assert set(statuses) == {401, 429}
    assert statuses.count(401) <= 200 + 20 * elapsed + 1
    assert proxy.graphql(credentials({"OFFLOAD_API_TOKEN": TOKEN}))("{ ok }") == {"ok": True}


def test_an_unknown_user_costs_the_same_password_check_as_a_known_one(proxy: Proxy) -> None:
    """nginx answers an unknown name at once and a known one after hashing the password: that difference
    names the users. Every refusal here is one hash: the unknown, the wrongly cased and the absent user are
    each checked as the decoy (whose hash is a real user's), the known one against its own."""
    attempts = [
        httpx.BasicAuth("intruder", PASSWORD),
        httpx.BasicAuth(USER.upper(), PASSWORD),
        httpx.BasicAuth("offload-decoy", PASSWORD),  # the decoy is not a login, even with its hash's password
        None,
        httpx.BasicAuth(USER, "wrong-password"),
    ]
    for auth in attempts:
        assert httpx.get(f"{proxy.url}/graphql", auth=auth).status_code == 401
    log = proxy.error_log.read_text()
    assert "was not found" not in log
    assert log.count('user "offload-decoy": password mismatch') == 4
    assert log.count(f'user "{USER}": password mismatch') == 1
    assert proxy.upstream.server.request_count == 0
