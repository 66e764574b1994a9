"""``offload.net.http.fetch`` (Trigger.dev's ``retry.fetch``) and the ``HttpClient`` resource against a flaky
HTTP
server on loopback: 429 honouring ``Retry-After`` (seconds and HTTP date) and rate-limit reset headers, 5xx
backing off until success, other 4xx failing at once, a hanging server timing out, per-status strategies,
the attempt budget, size caps, redirects, and the SSRF guard in front of it all.

Waits are measured between the arrivals of two requests at the server, never slept on by the test.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest

from benchmarks.support.http_server import (
    LocalHTTPServer,
    body,
    cut_short,
    hang,
    redirect,
    sequence,
    statuses,
)
from offload.errors import FetchError
from offload.net.address_policy import guarded_client
from offload.net.http import FetchRetry, HttpClient, fetch, wait_from_headers
from offload.retry import RetryPolicy

FAST = FetchRetry(policy=RetryPolicy(max_attempts=3, min_delay=0.01, max_delay=0.05))


@pytest.fixture
def server() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer({"/ok": body(b"hello")}) as running:
        yield running


@pytest.fixture
def client(server: LocalHTTPServer) -> Iterator[httpx.Client]:
    with guarded_client(timeout=httpx.Timeout(5.0), allow_hosts=[server.origin]) as guarded:
        yield guarded


def gaps(server: LocalHTTPServer) -> list[float]:
    return [later - earlier for earlier, later in zip(server.times, server.times[1:], strict=False)]


# --- statuses -----------------------------------------------------------------------------------------------


def test_429_with_retry_after_seconds_waits_that_long(server: LocalHTTPServer, client: httpx.Client) -> None:
    server.routes["/limited"] = sequence(body(b"slow down", 429, {"Retry-After": "2"}), body(b"done"))
    page = fetch(client, server.url("/limited"), retry=FAST)
    assert page.status == 200
    assert page.content == b"done"
    assert page.attempts == 2
    assert server.count("/limited") == 2
    assert gaps(server)[0] >= 2.0  # FAST's backoff alone would have waited 0.01 s


def test_429_with_retry_after_http_date(server: LocalHTTPServer, client: httpx.Client) -> None:
    # An HTTP date has whole seconds: ask for a moment 2 s ahead, which is 1-2 s from now.
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    server.routes["/limited"] = sequence(body(b"", 429, {"Retry-After": when}), body(b"done"))
    assert fetch(client, server.url("/limited"), retry=FAST).content == b"done"
    assert gaps(server)[0] >= 0.9


@pytest.mark.parametrize("header", ["RateLimit-Reset", "X-RateLimit-Reset"])
def test_429_with_a_rate_limit_reset_header(
    server: LocalHTTPServer, client: httpx.Client, header: str
) -> None:
    server.routes["/limited"] = sequence(body(b"", 429, {header: "1"}), body(b"done"))
    assert fetch(client, server.url("/limited"), retry=FAST).content == b"done"
    assert gaps(server)[0] >= 1.0


def test_429_without_headers_backs_off(server: LocalHTTPServer, client: httpx.Client) -> None:
    server.routes["/limited"] = statuses(429, then=body(b"done"))
    started = time.monotonic()
    assert fetch(client, server.url("/limited"), retry=FAST).content == b"done"
    assert time.monotonic() - started < 1.0


def test_a_wait_longer_than_max_wait_fails_at_once_but_retryable(
    server: LocalHTTPServer, client: httpx.Client
) -> None:
    server.routes["/limited"] = body(b"", 429, {"Retry-After": "3600"})
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        fetch(client, server.url("/limited"), retry=FAST)
    assert time.monotonic() - started < 1.0
    assert str(caught.value) == f"HTTP 429 from {server.url('/limited')} (retry after 3600.0 s)"
    assert caught.value.retryable  # the step's own policy may try later
    assert caught.value.retry_after == 3600
    assert server.count("/limited") == 1


def test_503_503_200_succeeds_on_the_third(server: LocalHTTPServer, client: httpx.Client) -> None:
    server.routes["/flaky"] = statuses(503, 503, then=body(b"finally"))
    page = fetch(client, server.url("/flaky"), retry=FAST)
    assert (page.status, page.content, page.attempts) == (200, b"finally", 3)
    assert server.count("/flaky") == 3


def test_5xx_backoff_follows_the_policy(server: LocalHTTPServer, client: httpx.Client) -> None:
    server.routes["/flaky"] = statuses(500, 502, then=body(b"ok"))
    policy = RetryPolicy(max_attempts=3, min_delay=0.2, factor=2, max_delay=5, randomize=False)
    fetch(client, server.url("/flaky"), retry=FetchRetry(policy=policy))
    first, second = gaps(server)
    assert first >= 0.2 and second >= 0.4  # never shorter than the policy
    # A busy machine only lengthens a wait: the factor shows as the second wait outgrowing the first by
    # about the first delay, and neither comes near the 5 s cap (a policy ignored would wait longer).
    assert second - first >= 0.15 and second < 1.5


def test_5xx_fails_retryable_when_the_budget_is_spent(server: LocalHTTPServer, client: httpx.Client) -> None:
    server.routes["/down"] = body(b"", 503)
    with pytest.raises(FetchError) as caught:
        fetch(client, server.url("/down"), retry=FAST)
    assert str(caught.value) == f"HTTP 503 from {server.url('/down')}"
    assert caught.value.retryable
    assert caught.value.status == 503
    assert server.count("/down") == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_other_4xx_fail_at_once(server: LocalHTTPServer, client: httpx.Client, status: int) -> None:
    server.routes["/no"] = body(b"", status)
    with pytest.raises(FetchError) as caught:
        fetch(client, server.url("/no"), retry=FAST)
    assert str(caught.value) == f"HTTP {status} from {server.url('/no')}"
    assert not caught.value.retryable
    assert server.count("/no") == 1


@pytest.mark.parametrize("status", [408, 409])
def test_408_and_409_are_retried(server: LocalHTTPServer, client: httpx.Client, status: int) -> None:
    server.routes["/again"] = statuses(status, then=body(b"ok"))
    assert fetch(client, server.url("/again"), retry=FAST).attempts == 2


def test_per_status_strategies_can_be_changed(server: LocalHTTPServer, client: httpx.Client) -> None:
    server.routes["/eventually"] = statuses(404, then=body(b"ok"))
    retry = FetchRetry(policy=FAST.policy, by_status={"404": "backoff", "500-599": "backoff"})
    assert fetch(client, server.url("/eventually"), retry=retry).content == b"ok"
    server.routes["/down"] = body(b"", 503)
    with pytest.raises(FetchError):
        fetch(client, server.url("/down"), retry=FetchRetry(policy=FAST.policy, by_status={}))
    assert server.count("/down") == 1  # not listed: fails at once


def test_bad_status_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="'5xx' is not a status like '429' or a range like '500-599'"):
        FetchRetry(by_status={"5xx": "backoff"})


# --- connections and timeouts -------------------------------------------------------------------------------


def test_a_hanging_server_times_out(server: LocalHTTPServer, client: httpx.Client) -> None:
    server.routes["/hang"] = hang
    one = FetchRetry(policy=RetryPolicy(max_attempts=1))
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        fetch(client, server.url("/hang"), timeout=0.5, retry=one)
    elapsed = time.monotonic() - started
    assert str(caught.value) == f"timed out: no data for 0.5 s from {server.url('/hang')}"
    assert caught.value.retryable
    assert 0.5 <= elapsed < 3


def test_timeouts_are_retried_within_the_budget(server: LocalHTTPServer, client: httpx.Client) -> None:
    server.routes["/slow"] = sequence(hang, body(b"awake"))
    assert fetch(client, server.url("/slow"), timeout=0.3, retry=FAST).content == b"awake"
    assert server.count("/slow") == 2


def test_connection_refused_is_retried_then_fails_retryable() -> None:
    import socket

    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]  # closed when the block ends: nothing listens there
    with guarded_client(timeout=httpx.Timeout(2.0), allow_hosts=[f"127.0.0.1:{port}"]) as guarded:
        started = time.monotonic()
        with pytest.raises(FetchError, match=r"^connection failed: http://127\.0\.0\.1:\d+/x") as caught:
            fetch(guarded, f"http://127.0.0.1:{port}/x", retry=FAST)
    assert caught.value.retryable
    assert time.monotonic() - started < 2


# --- bodies, redirects, requests ----------------------------------------------------------------------------


def test_body_size_cap(server: LocalHTTPServer, client: httpx.Client) -> None:
    server.routes["/big"] = body(b"x" * 5000)
    with pytest.raises(FetchError, match=r"^too large: more than 1000 bytes \(5000 declared\)") as caught:
        fetch(client, server.url("/big"), retry=FAST, max_bytes=1000)
    assert not caught.value.retryable
    assert server.count("/big") == 1


def test_consume_runs_on_every_attempt(server: LocalHTTPServer, client: httpx.Client) -> None:
    server.routes["/cut"] = sequence(cut_short(b"partial", declared=100), body(b"whole"))
    seen: list[int] = []

    def consume(response: httpx.Response) -> bytes:
        seen.append(response.status_code)
        return response.read()

    assert fetch(client, server.url("/cut"), consume, retry=FAST) == b"whole"
    assert seen == [200, 200]  # the first body was cut short (the peer hung up), and retried
    assert server.count("/cut") == 2


def test_redirects_are_followed_and_capped(server: LocalHTTPServer, client: httpx.Client) -> None:
    server.routes["/a"] = redirect("/ok")
    assert fetch(client, server.url("/a"), retry=FAST).content == b"hello"
    server.routes["/loop"] = redirect("/loop")
    with pytest.raises(FetchError, match=r"^too many redirects: more than 5") as caught:
        fetch(client, server.url("/loop"), retry=FAST)
    assert not caught.value.retryable
    server.routes["/file"] = redirect("file:///etc/passwd")
    with pytest.raises(FetchError, match=r"redirects to scheme 'file'"):
        fetch(client, server.url("/file"), retry=FAST)


def test_post_sends_its_body_and_headers(server: LocalHTTPServer, client: httpx.Client) -> None:
    server.routes["/hook"] = statuses(
        502, then=body(b'{"ok": true}', headers={"Content-Type": "application/json"})
    )
    page = fetch(client, server.url("/hook"), method="POST", content=b'{"n": 1}', retry=FAST)
    assert page.text == '{"ok": true}'
    assert server.methods == ["POST", "POST"]
    assert server.bodies == [b'{"n": 1}', b'{"n": 1}']  # the retry sends the same body


def test_retries_are_logged_with_attempt_error_and_delay(
    server: LocalHTTPServer, client: httpx.Client
) -> None:
    class Log:
        def __init__(self) -> None:
            self.lines: list[tuple[str, dict[str, Any]]] = []

        def warning(self, message: str, fields: dict[str, Any]) -> None:
            self.lines.append((message, fields))

    log = Log()
    server.routes["/flaky"] = statuses(503, then=body(b"ok"))
    fetch(client, server.url("/flaky") + "?token=s3cr3t", retry=FAST, log=cast(Any, log))
    [(message, fields)] = log.lines
    assert message.startswith("request attempt 1 of 3 failed, retrying in 0.0")
    assert fields["url"] == server.url("/flaky")  # no query string: it may carry credentials
    assert fields["error"] == f"HTTP 503 from {server.url('/flaky')}"
    assert 0.01 <= fields["delay_s"] <= 0.05


# --- the resource and the guard -----------------------------------------------------------------------------


def test_http_client_resource_refuses_loopback_unless_allowed(server: LocalHTTPServer) -> None:
    with pytest.raises(FetchError) as caught:
        HttpClient(min_delay=0.01).fetch(server.url("/ok"))
    assert str(caught.value) == "refused: 127.0.0.1 is a loopback address"
    assert not caught.value.retryable
    assert server.request_count == 0
    page = HttpClient(allow_hosts=[server.origin], min_delay=0.01).fetch(server.url("/ok"))
    assert page.content == b"hello"


def test_http_client_resource_refuses_a_redirect_to_loopback(server: LocalHTTPServer) -> None:
    """The web jobs' resource re-checks every hop: an allowed host redirecting to a loopback service
    that is not allowed (an internal admin port, say) is refused before connecting to it."""
    with LocalHTTPServer({"/admin": body(b"internal")}) as internal:
        server.routes["/go"] = redirect(internal.url("/admin"))
        with pytest.raises(FetchError, match=r"^refused: 127\.0\.0\.1 is a loopback address$") as caught:
            HttpClient(allow_hosts=[server.origin], min_delay=0.01).fetch(server.url("/go"))
        assert not caught.value.retryable
        assert server.paths == ["/go"] and internal.request_count == 0


def test_http_client_resource_budget_and_cap(server: LocalHTTPServer) -> None:
    server.routes["/down"] = body(b"", 500)
    resource = HttpClient(allow_hosts=[server.origin], max_attempts=2, min_delay=0.01, max_bytes=3)
    with pytest.raises(FetchError):
        resource.fetch(server.url("/down"))
    assert server.count("/down") == 2
    with pytest.raises(FetchError, match="too large"):
        resource.fetch(server.url("/ok"))


# --- header parsing -----------------------------------------------------------------------------------------

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "0"}, 0.0),
        ({"Retry-After": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"Retry-After": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0),  # in the past: now
        ({"RateLimit-Reset": "12"}, 12.0),
        ({"X-RateLimit-Reset": str(int(NOW + 45))}, 45.0),  # a Unix time (GitHub)
        ({"X-RateLimit-Reset": str(int((NOW + 5) * 1000))}, 5.0),  # a Unix time in milliseconds
        ({"Retry-After": "3", "X-RateLimit-Reset": "60"}, 3.0),  # Retry-After wins
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_wait_from_headers(headers: dict[str, str], expected: float | None) -> None:
    wait = wait_from_headers(httpx.Headers(headers), now=NOW)
    assert wait == (pytest.approx(expected) if expected is not None else None)
