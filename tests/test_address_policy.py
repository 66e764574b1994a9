"""The SSRF guard in ``offload.net.address_policy``: which addresses are forbidden (pure, no network), how a
host is
checked against all its addresses and the allow list (fake resolvers), that the network backend connects
to the address it checked and nothing else (a recording backend, no sockets), and that over real TLS on
127.0.0.1 the server still sees the host name in SNI and ``Host``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest

from benchmarks.support.http_server import LocalHTTPServer, body
from offload.errors import FetchError
from offload.net.address_policy import GuardedBackend, check_host, forbidden_reason, guarded_client
from tests.support.tls import self_signed

# --- forbidden_reason ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("100.64.0.1", "CGNAT"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "non-public"),  # documentation range: caught by the is_global fallback
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fc00::1", "unique local"),
        ("fd12:3456::1", "unique local"),
        ("fe80::1", "link-local"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback address (IPv4-mapped 127.0.0.1)"),
        ("::ffff:10.0.0.1", "private address (IPv4-mapped 10.0.0.1)"),
        ("::ffff:169.254.169.254", "metadata"),
        ("2002:a01:203::1", "private address (6to4 10.1.2.3)"),
        ("64:ff9b::7f00:1", "loopback address (NAT64 127.0.0.1)"),
        ("2001::1", "Teredo"),
    ],
)
def test_forbidden_addresses_are_refused_with_their_reason(address: str, reason: str) -> None:
    found = forbidden_reason(address)
    assert found is not None and reason in found


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:93.184.216.34", "64:ff9b::5db8:d822"],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert forbidden_reason(address) is None


# --- check_host ---------------------------------------------------------------------------------------------


def fake_resolver(table: dict[str, list[str]]) -> Any:
    """A resolver answering from ``table`` (names compare case-blind, as in DNS), recording each call;
    unknown names fail as getaddrinfo does."""

    def resolve(host: str, port: int) -> list[str]:
        resolve.calls.append(host)  # type: ignore[attr-defined]
        if host.lower() not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host.lower()]

    resolve.calls = []  # type: ignore[attr-defined]
    return resolve


def test_a_name_with_one_private_address_among_public_ones_is_refused() -> None:
    resolver = fake_resolver({"mixed.test": ["93.184.216.34", "10.0.0.5"]})
    with pytest.raises(FetchError) as caught:
        check_host("mixed.test", 443, resolver=resolver)
    assert str(caught.value) == "refused: mixed.test resolves to 10.0.0.5, a private address"
    assert not caught.value.retryable


def test_a_name_with_only_public_addresses_returns_them_all() -> None:
    resolver = fake_resolver({"cdn.test": ["93.184.216.34", "2606:4700::1111"]})
    assert check_host("cdn.test", 443, resolver=resolver) == ["93.184.216.34", "2606:4700::1111"]


def test_a_literal_address_is_checked_without_resolving() -> None:
    resolver = fake_resolver({})
    with pytest.raises(FetchError, match=r"^refused: 127\.0\.0\.1 is a loopback address$"):
        check_host("127.0.0.1", 80, resolver=resolver)
    with pytest.raises(FetchError, match=r"^refused: ::1 is a loopback address$"):
        check_host("[::1]", 80, resolver=resolver)
    assert resolver.calls == []


def test_numeric_spellings_of_loopback_are_caught_after_resolution() -> None:
    """``2130706433`` is 127.0.0.1 to inet_aton; the system resolver parses it locally (no DNS)."""
    with pytest.raises(FetchError, match=r"resolves to 127\.0\.0\.1, a loopback address"):
        check_host("2130706433", 80)


@pytest.mark.parametrize(
    ("allow", "host", "port"),
    [
        (["internal.test"], "internal.test", 8080),
        (["internal.test:8080"], "internal.test", 8080),
        (["INTERNAL.test"], "internal.TEST", 8080),
        (["127.0.0.1:9000"], "127.0.0.1", 9000),
        (["[::1]:9000"], "::1", 9000),
        (["::1"], "::1", 9000),
    ],
)
def test_allow_list_admits_a_listed_host_or_host_and_port(allow: list[str], host: str, port: int) -> None:
    resolver = fake_resolver({"internal.test": ["10.0.0.7"]})
    assert check_host(host, port, allow_hosts=allow, resolver=resolver)


def test_allow_list_entry_with_a_port_does_not_admit_other_ports() -> None:
    resolver = fake_resolver({"internal.test": ["10.0.0.7"]})
    with pytest.raises(FetchError, match=r"private"):
        check_host("internal.test", 8081, allow_hosts=["internal.test:8080"], resolver=resolver)


def test_unknown_names_fail_for_good_and_resolver_hiccups_are_retryable() -> None:
    with pytest.raises(FetchError, match=r"^unresolvable: nowhere\.test") as caught:
        check_host("nowhere.test", 80, resolver=fake_resolver({}))
    assert not caught.value.retryable

    def flaky(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    with pytest.raises(FetchError) as caught:
        check_host("cdn.test", 80, resolver=flaky)
    assert caught.value.retryable


# --- GuardedBackend -----------------------------------------------------------------------------------------


class RecordingBackend(httpcore.NetworkBackend):
    """Stands in for the socket layer: records what it is asked to connect to and opens nothing."""

    def __init__(self, down: Iterable[str] = ()):
        self.connects: list[tuple[str, int]] = []
        self.down = set(down)

    def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        self.connects.append((host, port))
        if host in self.down:
            raise httpcore.ConnectError(f"{host} is down")
        return httpcore.NetworkStream()


def test_backend_connects_to_the_checked_address_not_the_name() -> None:
    """DNS rebinding: the name is resolved once; a second answer (private) is never asked for or used."""
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    calls: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    inner = RecordingBackend()
    GuardedBackend(resolver=rebinding, inner=inner).connect_tcp("video.test", 443, timeout=1)
    assert inner.connects == [("93.184.216.34", 443)]
    assert calls == ["video.test"]


def test_backend_refuses_before_connecting() -> None:
    inner = RecordingBackend()
    backend = GuardedBackend(resolver=fake_resolver({"meta.test": ["169.254.169.254"]}), inner=inner)
    with pytest.raises(
        FetchError, match=r"^refused: meta\.test resolves to 169\.254\.169\.254, the cloud metadata"
    ):
        backend.connect_tcp("meta.test", 80)
    assert inner.connects == []


def test_backend_tries_the_next_checked_address_when_one_is_down() -> None:
    inner = RecordingBackend(down={"2606:4700::1111"})
    resolver = fake_resolver({"cdn.test": ["2606:4700::1111", "93.184.216.34"]})
    GuardedBackend(resolver=resolver, inner=inner).connect_tcp("cdn.test", 443)
    assert inner.connects == [("2606:4700::1111", 443), ("93.184.216.34", 443)]


# --- guarded_client over real TLS on loopback ---------------------------------------------------------------


def test_tls_uses_the_host_name_for_sni_certificate_and_host_header(tmp_path: Path) -> None:
    """The backend connects to 127.0.0.1, yet the certificate for ``files.test`` verifies, the server
    receives ``files.test`` as SNI, and the request's Host header names ``files.test``."""
    server_tls, client_tls = self_signed(tmp_path, "files.test")
    sni: list[str | None] = []
    server_tls.sni_callback = lambda _sock, name, _ctx: sni.append(name)
    with LocalHTTPServer({"/clip": body(b"tls ok")}, tls=server_tls) as server:
        resolver = fake_resolver({"files.test": ["127.0.0.1"]})
        client = guarded_client(
            timeout=httpx.Timeout(5), allow_hosts=["files.test"], resolver=resolver, verify=client_tls
        )
        with client:
            response = client.get(f"https://files.test:{server.port}/clip")
        assert response.content == b"tls ok"
        assert sni == ["files.test"]
        assert server.host_headers == [f"files.test:{server.port}"]


def test_tls_certificate_for_another_name_is_rejected(tmp_path: Path) -> None:
    """Connecting by IP must not weaken verification: a certificate for another name still fails."""
    server_tls, client_tls = self_signed(tmp_path, "other.test")
    with LocalHTTPServer({"/clip": body(b"x")}, tls=server_tls) as server:
        resolver = fake_resolver({"files.test": ["127.0.0.1"]})
        client = guarded_client(
            timeout=httpx.Timeout(5), allow_hosts=["files.test"], resolver=resolver, verify=client_tls
        )
        with client, pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|match"):
            client.get(f"https://files.test:{server.port}/clip")
        assert server.request_count == 0


def test_the_guard_is_not_bypassed_by_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy would resolve the host out of the guard's sight, so proxy variables must be ignored: the
    loopback server is both the target (not allowed) and the proxy, and it must see no request."""
    with LocalHTTPServer({"/": body(b"x")}) as server:
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, server.url(""))
        client = guarded_client(timeout=httpx.Timeout(5))
        with client, pytest.raises(FetchError, match=r"^refused: 127\.0\.0\.1 is a loopback address$"):
            client.get(server.url("/"))
        assert server.request_count == 0
