"""What the Dagster UI's server accepts from a browser: the defence against other web pages.

Dagster's webserver has no authentication and no CSRF defence: it runs GraphQL mutations sent by GET
(an ``<img>`` tag), by form or ``text/plain`` POSTs (which browsers send cross-origin without asking),
answers any ``Host`` (DNS rebinding) and accepts websockets from any origin. So any page an operator
visits could launch runs and read their logs. ``UIGuard`` is an ASGI middleware in front of its app that
refuses, before the app sees them:

- a ``Host`` not in the allow-list (``127.0.0.1``, ``localhost``, ``::1`` and the host of
  ``OFFLOAD_UI_URL``): a rebound DNS name reaches the server but is not its name;
- an ``Origin`` other than the UI's own (the ``Host`` it was reached by), on any request or websocket:
  browsers send it on every cross-origin POST and websocket, and a page cannot forge it;
- on ``/graphql``: a POST whose body is not ``Content-Type: application/json`` (which a cross-origin page
  can only send after a CORS preflight the server never grants), a GET carrying a mutation or subscription
  (GET is for queries and the GraphiQL page), and any other method.

``refusal`` is the pure decision, unit tested; ``UIGuard`` only feeds it the request and sends the answer.
deploy/proxy/ applies the same rules in nginx for production.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from graphql import GraphQLError, OperationDefinitionNode, OperationType, parse
from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
UI_URL_VARIABLE = "OFFLOAD_UI_URL"
GRAPHQL_PATH = "/graphql"
# Headers that must come once: with two, the app and this guard could each read a different one.
SINGLE_HEADERS = ("host", "origin", "content-type")


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str


def allowed_hosts(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """Loopback names plus the host of ``OFFLOAD_UI_URL`` (the name operators reach the UI by), lower case."""
    env = os.environ if environ is None else environ
    hosts = set(LOOPBACK_HOSTS)
    url = env.get(UI_URL_VARIABLE, "").strip()
    if url:
        name = urlsplit(url).hostname
        if not name:
            raise ValueError(f"{UI_URL_VARIABLE}: must be an http:// or https:// URL with a host")
        hosts.add(name.lower())
    return frozenset(hosts)


def _hostname(authority: str) -> str | None:
    """``host`` of a ``host[:port]`` (``[v6]:port`` too), lower case; None if it is not one."""
    try:
        parts = urlsplit(f"//{authority}")
        parts.port  # noqa: B018 -- raises ValueError on a port that is not a number
    except ValueError:
        return None
    if parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    return parts.hostname


def _origin_authority(origin: str) -> str | None:
    """``host[:port]`` of an ``Origin`` header, lower case; None for ``null`` or anything malformed."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        return None
    return parts.netloc.lower()


def _operations(query: str) -> set[OperationType] | None:
    """The kinds of operation in a GraphQL document, or None if it does not parse."""
    try:
        document = parse(query)
    except GraphQLError:
        return None
    return {d.operation for d in document.definitions if isinstance(d, OperationDefinitionNode)}


def refusal(
    method: str,
    path: str,
    query_string: str,
    headers: Iterable[tuple[str, str]],
    hosts: frozenset[str],
    websocket: bool = False,
) -> Refusal | None:
    """Why this request must not reach the UI's server, or None to let it through.

    ``headers`` are (lower-case name, value) pairs as received; ``hosts`` from :func:`allowed_hosts`.
    """
    values: dict[str, list[str]] = {}
    for name, value in headers:
        values.setdefault(name.lower(), []).append(value.strip())
    for name in SINGLE_HEADERS:
        if len(values.get(name, [])) > 1:
            return Refusal(400, f"{name}: sent more than once")
    host = values.get("host", [""])[0]
    hostname = _hostname(host) if host else None
    if hostname is None or hostname not in hosts:
        return Refusal(
            421,
            f"Host: {host or '(none)'} is not a name of this UI; allowed: {', '.join(sorted(hosts))}"
            f" (add the public one with {UI_URL_VARIABLE})",
        )
    origin = values.get("origin", [None])[0]
    if origin is not None and _origin_authority(origin) != host.lower():
        return Refusal(
            403, f"Origin: {origin} is not this UI's own ({host}); cross-site requests are refused"
        )
    if websocket or path.rstrip("/") != GRAPHQL_PATH:
        return None
    if method == "POST":
        media_type = values.get("content-type", [""])[0].split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            return Refusal(415, "Content-Type: GraphQL requests are POSTed as application/json")
        return None
    if method in ("GET", "HEAD"):
        queries = parse_qs(query_string, keep_blank_values=True).get("query", [])
        for query in queries:
            kinds = _operations(query)
            if kinds is None:
                return Refusal(400, "query: not a valid GraphQL document")
            if kinds - {OperationType.QUERY}:
                return Refusal(405, "query: mutations and subscriptions only by POST with application/json")
        return None
    return Refusal(405, f"{method} /graphql: only GET (queries, the GraphiQL page) and POST (JSON)")


class UIGuard:
    """ASGI middleware: ``refusal`` for every HTTP request and websocket before ``app`` sees it."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str] | None = None) -> None:
        self.app = app
        self.hosts = allowed_hosts() if hosts is None else hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        refused = refusal(
            scope.get("method", "GET"),
            scope["path"],
            scope.get("query_string", b"").decode("latin-1"),
            headers,
            self.hosts,
            websocket=scope["type"] == "websocket",
        )
        if refused is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            # Closing before accepting: the server answers the upgrade with HTTP 403, no frame is sent.
            await send({"type": "websocket.close", "code": 1008, "reason": refused.message[:120]})
        else:
            body = (refused.message + "\n").encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": refused.status,
                    "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
