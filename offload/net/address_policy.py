"""Which network addresses offload may connect to when it fetches a user-supplied URL (SSRF guard).

A URL from a payload must not make a worker talk to itself, to the cloud metadata service or to anything
on the private network (OWASP SSRF cheat sheet, shared/REFERENCE.md). Checking the URL's host name is not
enough: a public name can resolve to a private address, resolve differently the second time (DNS
rebinding), or redirect to one. So the check sits where the socket is opened: ``GuardedBackend`` resolves
the host once, refuses it if any of its addresses is forbidden, and connects to the address it checked.
Every connection an ``httpx.Client`` from ``guarded_client`` opens, including every redirect hop, goes
through it.

``forbidden_reason`` is the pure rule; ``check_host`` applies it to a host name and the allow list.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import httpcore
import httpx

from offload.errors import FetchError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
"""``(host, port) -> addresses``: every A and AAAA address of ``host``, as strings."""

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Checked in order, so the specific reason wins over the general one (metadata before link-local).
_V4_RULES: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/8"), "an unspecified address"),
    (_V4("127.0.0.0/8"), "a loopback address"),
    (_V4("10.0.0.0/8"), "a private address"),
    (_V4("172.16.0.0/12"), "a private address"),
    (_V4("192.168.0.0/16"), "a private address"),
    (_V4("169.254.169.254/32"), "the cloud metadata address"),
    (_V4("169.254.0.0/16"), "a link-local address"),
    (_V4("100.64.0.0/10"), "a shared (CGNAT) address"),
    (_V4("224.0.0.0/4"), "a multicast address"),
    (_V4("240.0.0.0/4"), "a reserved address"),
)
_V6_RULES: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "an unspecified address"),
    (_V6("::1/128"), "a loopback address"),
    (_V6("fe80::/10"), "a link-local address"),
    (_V6("fec0::/10"), "a site-local address"),
    (_V6("fc00::/7"), "a unique local (private) address"),
    (_V6("ff00::/8"), "a multicast address"),
    (_V6("2001::/32"), "a Teredo tunnel address"),
)
_NAT64 = _V6("64:ff9b::/96")


def forbidden_reason(ip: str | IPAddress) -> str | None:
    """Why offload must not connect to ``ip`` (e.g. ``"a loopback address"``), or None if it is public.

    Addresses that carry an IPv4 address inside (IPv4-mapped ``::ffff:a.b.c.d``, 6to4, NAT64) are judged
    by that IPv4 address too, because the kernel or a gateway delivers them to it. Anything the named
    rules miss but Python does not call global (documentation, benchmarking, IETF ranges) is refused as
    well: a downloader has no business there.
    """
    address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(address, ipaddress.IPv4Address):
        rules: Iterable[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = _V4_RULES
    else:
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            kind, inner = embedded
            reason = forbidden_reason(inner)
            # A public IPv4 address behind a mapping or translation prefix is as public as itself.
            return None if reason is None else f"{reason} ({kind} {inner})"
        rules = _V6_RULES
    for network, reason in rules:
        if address in network:
            return reason
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "a special-purpose (non-public) address"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    if address.ipv4_mapped is not None:
        return "IPv4-mapped", address.ipv4_mapped
    if address.sixtofour is not None:
        return "6to4", address.sixtofour
    if address in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """All A and AAAA addresses of ``host`` from the system resolver, in its preferred order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_allowed_host(host: str, port: int, allow_hosts: Iterable[str]) -> bool:
    """True if ``host`` or ``host:port`` (``[v6]:port`` for IPv6) is listed; names compare case-blind."""
    host = host.strip("[]").lower()
    spellings = {host, f"{host}:{port}", f"[{host}]", f"[{host}]:{port}"}
    return any(entry.strip().lower() in spellings for entry in allow_hosts)


def check_host(
    host: str, port: int, *, allow_hosts: Iterable[str] = (), resolver: Resolver = system_resolver
) -> list[str]:
    """The addresses to connect to for ``host``, or ``FetchError`` if any of them is forbidden.

    All addresses are checked, not only the first: a name with one public and one private address
    could otherwise be steered to the private one. A listed host skips the address rule (it is how
    tests and trusted internal sources are reached) but is still resolved only once.
    """
    host = host.strip("[]")
    try:
        addresses = [str(ipaddress.ip_address(host))]  # a literal needs no resolver
        literal = True
    except ValueError:
        addresses = _resolve(host, port, resolver)
        literal = False
    if is_allowed_host(host, port, allow_hosts):
        return addresses
    for address in addresses:
        reason = forbidden_reason(address)
        if reason is not None:
            where = f"{host} is" if literal else f"{host} resolves to {address},"
            raise FetchError(f"refused: {where} {reason}")
    return addresses


def _resolve(host: str, port: int, resolver: Resolver) -> list[str]:
    try:
        addresses = resolver(host, port)
    except socket.gaierror as exc:
        # EAI_AGAIN is a resolver having a bad moment; a name that does not exist will not start to.
        raise FetchError(
            f"unresolvable: {host} ({exc.strerror or exc})", retryable=exc.errno == socket.EAI_AGAIN
        ) from exc
    if not addresses:
        raise FetchError(f"unresolvable: {host} has no address")
    return addresses


class GuardedBackend(httpcore.NetworkBackend):
    """An httpcore network backend that checks the address of every TCP connection before opening it.

    It resolves the host once with ``check_host`` and hands the checked IP literal (never the name) to
    the wrapped ``httpcore.SyncBackend``, so nothing resolves the name a second time. TLS is unaffected:
    httpcore passes the URL's host name to ``start_tls`` for SNI and certificate checks, and httpx sends
    it in ``Host``.
    """

    def __init__(
        self,
        allow_hosts: Iterable[str] = (),
        *,
        resolver: Resolver = system_resolver,
        inner: httpcore.NetworkBackend | None = None,
    ):
        self._allow_hosts = tuple(allow_hosts)
        self._resolver = resolver
        self._inner = inner if inner is not None else httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = check_host(host, port, allow_hosts=self._allow_hosts, resolver=self._resolver)
        options = list(socket_options or ())
        last_error: httpcore.ConnectError | None = None
        for address in addresses:  # like socket.create_connection: the next address if one is down
            try:
                return self._inner.connect_tcp(address, port, timeout, local_address, options)
            except httpcore.ConnectError as exc:
                last_error = exc
        assert last_error is not None  # check_host never returns an empty list
        raise last_error

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise FetchError("refused: unix sockets are never fetched")


# httpcore's exceptions as the httpx ones callers catch; most specific first.
_HTTPCORE_TO_HTTPX: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core_error, httpx_error in _HTTPCORE_TO_HTTPX:
            if isinstance(exc, core_error):
                raise httpx_error(str(exc)) from exc
        raise


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]):
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class GuardedTransport(httpx.BaseTransport):
    """An httpx transport over ``httpcore.ConnectionPool(network_backend=GuardedBackend(...))``.

    Why not ``httpx.HTTPTransport``: it has no ``network_backend`` parameter, and swapping the backend
    afterwards means writing to its private ``_pool`` and the pool's private ``_network_backend``, which
    a minor httpx release may rename without notice. A ``BaseTransport`` is httpx's documented extension
    point and ``network_backend`` is a public ``ConnectionPool`` argument, so this class uses public API
    only, at the cost of the few lines httpx's own transport has: building the httpcore request and
    mapping httpcore's exceptions to httpx's. It never uses a proxy (a proxy would resolve the host
    itself, out of the guard's sight).
    """

    def __init__(
        self,
        allow_hosts: Iterable[str] = (),
        *,
        resolver: Resolver = system_resolver,
        verify: ssl.SSLContext | bool = True,
    ):
        ssl_context = (
            verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify=verify)
        )
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            network_backend=GuardedBackend(allow_hosts, resolver=resolver),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = self._pool.handle_request(core_request)
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


def guarded_client(
    *,
    timeout: httpx.Timeout,
    allow_hosts: Iterable[str] = (),
    resolver: Resolver = system_resolver,
    verify: ssl.SSLContext | bool = True,
) -> httpx.Client:
    """An ``httpx.Client`` whose every connection passes ``check_host``; redirects are the caller's.

    ``trust_env=False`` keeps proxy variables and ``.netrc`` out: the fetch goes where the URL says,
    through the guard, with no credentials the user did not put in the URL.
    """
    return httpx.Client(
        transport=GuardedTransport(allow_hosts, resolver=resolver, verify=verify),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": "offload-fetch/1"},
    )
