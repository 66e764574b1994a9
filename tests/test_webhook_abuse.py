"""The gateway's abuse limits over real HTTP on loopback (uvicorn in its own process, storing only).

A client that dribbles its headers or its body is cut at the read deadline (408, then closed) and nothing
is stored; an idle connection is closed too; headers over the limit are refused; past the connection bound
new requests get 503 until connections free up; a source over its rate gets 429 with ``Retry-After`` while
other sources go on; every event answered 200 is in the inbox, and none answered otherwise. Sources are
told apart by ``X-Forwarded-For``, which uvicorn takes from a trusted proxy (loopback, by default).
"""

from __future__ import annotations

import itertools
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks.support import services
from benchmarks.support.waiting import wait_for
from benchmarks.support.webhooks import body_of, github_headers, github_push
from offload.errors import ConfigurationError
from offload.webhooks.inbox import Inbox
from offload.webhooks.settings import GatewaySettings

READ_TIMEOUT = 2.0
MAX_CONNECTIONS = 8
MAX_HEADER_BYTES = 8192
RATE = 5  # per minute and source
_sources = (f"198.51.100.{n}" for n in itertools.count(1))  # documentation addresses, only ever a header


class Gateway:
    def __init__(self, port: int, inbox: Inbox, log: Path):
        self.port, self.inbox, self.log = port, inbox, log

    def post(self, source: str, extra: dict[str, str] | None = None) -> tuple[httpx.Response, str]:
        """A signed GitHub delivery from ``source`` on a fresh connection; the answer and the delivery id."""
        body = body_of(github_push())
        delivery = str(uuid.uuid4())
        headers = {**github_headers(body, delivery=delivery), "X-Forwarded-For": source, **(extra or {})}
        answer = httpx.post(f"http://127.0.0.1:{self.port}/webhooks/github", content=body, headers=headers)
        return answer, delivery

    def stored(self, delivery: str) -> bool:
        return self.inbox.find("github", delivery) is not None

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("abuse")
    settings = {
        "OFFLOAD_WEBHOOK_READ_TIMEOUT": str(READ_TIMEOUT),
        "OFFLOAD_WEBHOOK_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "OFFLOAD_WEBHOOK_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
        "OFFLOAD_WEBHOOK_RATE_LIMIT": f"{RATE}/minute",
    }
    with services.sensor_gateway(root, **settings) as (port, url):
        inbox = Inbox(url)
        yield Gateway(port, inbox, root / "gateway.log")
        inbox.dispose()


def _dribble_until_cut(sock: socket.socket, chunks: Iterator[bytes], limit: float) -> tuple[float, bytes]:
    """Send a chunk every 0.25 s until the server closes the connection; (seconds it took, what it said)."""
    started = time.monotonic()
    sock.settimeout(0.25)
    received = b""
    while time.monotonic() - started < limit:
        try:
            sock.sendall(next(chunks))
            data = sock.recv(4096)  # waits up to 0.25 s: the pace of the dribble
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
        received += data
        if not data:
            break
    return time.monotonic() - started, received


def test_slow_headers_are_cut_at_the_read_deadline(gateway: Gateway) -> None:
    with gateway.connect() as sock:
        start = [b"POST /webhooks/github HTTP/1.1\r\nHost: gateway\r\n"]
        headers = (b"X-Slow-%d: x\r\n" % n for n in itertools.count())
        took, said = _dribble_until_cut(sock, itertools.chain(start, headers), limit=READ_TIMEOUT + 8)
    assert took < READ_TIMEOUT + 4, f"still connected after {took:.1f} s"
    assert said == b"" or said.startswith(b"HTTP/1.1 408 ")


def test_a_slow_body_is_cut_and_nothing_is_stored(gateway: Gateway) -> None:
    body = body_of(github_push())
    delivery = str(uuid.uuid4())
    head = "".join(f"{k}: {v}\r\n" for k, v in github_headers(body, delivery=delivery).items())
    request = f"POST /webhooks/github HTTP/1.1\r\nHost: gateway\r\nContent-Length: {len(body)}\r\n{head}\r\n"
    with gateway.connect() as sock:
        chunks = itertools.chain([request.encode()], (body[i : i + 1] for i in range(len(body))))
        took, said = _dribble_until_cut(sock, chunks, limit=READ_TIMEOUT + 8)
    assert took < READ_TIMEOUT + 4 and said.startswith(b"HTTP/1.1 408 "), (took, said)
    assert not gateway.stored(delivery)
    # The app saw the disconnect as a refused request, not as an error of its own.
    wait_for(lambda: "body: connection closed" in gateway.log.read_text(), 10, "the refusal logged")
    assert "Traceback" not in gateway.log.read_text()


def test_an_idle_connection_is_closed(gateway: Gateway) -> None:
    with gateway.connect() as sock:
        started = time.monotonic()
        said = sock.recv(4096)  # blocks until the server writes or closes (socket timeout 10 s)
        took = time.monotonic() - started
    assert said.startswith(b"HTTP/1.1 408 ") and took < READ_TIMEOUT + 4


def test_a_normal_request_on_a_kept_alive_connection_is_unaffected(gateway: Gateway) -> None:
    source = next(_sources)
    with httpx.Client(base_url=f"http://127.0.0.1:{gateway.port}") as client:
        for _ in range(2):  # the second request is sent after the first one's deadline would have passed
            body = body_of(github_push())
            delivery = str(uuid.uuid4())
            headers = {**github_headers(body, delivery=delivery), "X-Forwarded-For": source}
            assert client.post("/webhooks/github", content=body, headers=headers).status_code == 200
            assert gateway.stored(delivery)


def test_headers_over_the_limit_are_refused(gateway: Gateway) -> None:
    stored_before = sum(gateway.inbox.counts().values())
    # Read in one piece: complete when parsed, refused by the app.
    answer, delivery = gateway.post(next(_sources), {"X-Padding": "p" * (MAX_HEADER_BYTES + 1024)})
    assert answer.status_code == 431 and not gateway.stored(delivery)
    assert answer.json() == {"error": f"headers: larger than {MAX_HEADER_BYTES} bytes"}
    # Far larger: uvicorn's h11 stops buffering the incomplete header block, answers 400 and closes; the
    # client, still sending, may see the reset before the answer.
    padding = {"X-Padding": "p" * (256 * 1024)}
    try:
        answer, _ = gateway.post(next(_sources), padding)
        assert answer.status_code == 400
    except httpx.TransportError as error:
        assert "reset" in str(error).lower() or "closed" in str(error).lower(), error
    assert sum(gateway.inbox.counts().values()) == stored_before
    answer, delivery = gateway.post(next(_sources), {"X-Padding": "p" * (MAX_HEADER_BYTES // 2)})
    assert answer.status_code == 200 and gateway.stored(delivery)


def test_past_the_connection_bound_requests_get_503_until_connections_free(gateway: Gateway) -> None:
    idle = [gateway.connect() for _ in range(MAX_CONNECTIONS)]
    try:
        refused = wait_for(
            lambda: _answered(gateway, 503), READ_TIMEOUT, "a 503 while the connections are taken", 0.05
        )
        assert not gateway.stored(refused)
    finally:
        for sock in idle:
            sock.close()
    accepted = wait_for(lambda: _answered(gateway, 200), 10, "a 200 once connections are free")
    assert gateway.stored(accepted)


def _answered(gateway: Gateway, status: int) -> str:
    """The delivery id of a fresh post if it was answered ``status``, else ``""``."""
    answer, delivery = gateway.post(next(_sources))
    return delivery if answer.status_code == status else ""


def test_a_source_over_its_rate_gets_429_with_retry_after_and_others_go_on(gateway: Gateway) -> None:
    busy, other = next(_sources), next(_sources)
    accepted = [gateway.post(busy) for _ in range(RATE)]
    assert [answer.status_code for answer, _ in accepted] == [200] * RATE
    assert all(gateway.stored(delivery) for _, delivery in accepted)  # accepted means durable
    refused, delivery = gateway.post(busy)
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.json() == {"error": "rate limit: too many requests from this source"}
    assert not gateway.stored(delivery)
    answer, delivery = gateway.post(other)
    assert answer.status_code == 200 and gateway.stored(delivery)


@pytest.mark.parametrize(
    "name, value, message",
    [
        (
            "OFFLOAD_WEBHOOK_RATE_LIMIT",
            "fast",
            r"must be a rate like 100/second or 600/minute, or off; got 'fast'$",
        ),
        ("OFFLOAD_WEBHOOK_READ_TIMEOUT", "0", r"must be at least 0.1, got '0'$"),
        ("OFFLOAD_WEBHOOK_MAX_HEADER_BYTES", "100", r"must be at least 1024, got '100'$"),
        ("OFFLOAD_WEBHOOK_MAX_CONNECTIONS", "many", r"must be a number, got 'many'$"),
        ("OFFLOAD_REALTIME_INTERVAL", "0", r"must be at least 0.05, got '0'$"),
        ("OFFLOAD_REALTIME_INTERVAL", "soon", r"must be a number, got 'soon'$"),
    ],
)
def test_limit_settings_errors_are_one_line(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=f"^{name}: {message}"):
        GatewaySettings.from_env({name: value})


def test_limit_defaults_and_off() -> None:
    settings = GatewaySettings.from_env({})
    assert (settings.read_timeout, settings.max_header_bytes, settings.max_connections) == (15.0, 16384, 256)
    assert settings.realtime_interval == 0.1
    assert settings.rate_limit is not None and str(settings.rate_limit) == "100 per 1 second"
    assert GatewaySettings.from_env({"OFFLOAD_WEBHOOK_RATE_LIMIT": "off"}).rate_limit is None
    options = settings.uvicorn_options()
    assert options["limit_concurrency"] == 256 and options["h11_max_incomplete_event_size"] == 16384
