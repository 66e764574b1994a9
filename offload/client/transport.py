"""The client's transport: GraphQL requests to the Dagster webserver over httpx.

Explicit timeouts; a refused or timed-out connection becomes ``WebserverUnreachableError`` naming the URL and
the setting that changes it; GraphQL-level errors become ``GraphQLError``. Connection attempts are retried
(nothing was sent yet, so even a mutation is safe to resend); answers are never retried here.

The webserver has no authentication of its own; in production it sits behind an authenticating proxy
(deploy/proxy/, docs/security.md). ``credentials`` reads what the client sends it on every request: a
bearer token (``OFFLOAD_API_TOKEN``) or basic auth (``OFFLOAD_API_USER`` and ``OFFLOAD_API_PASSWORD``). The
values go only into the ``Authorization`` header: never into the URL, a message or a log line.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from offload.exceptions import (
    AuthenticationError,
    ConfigurationError,
    GraphQLError,
    WebserverUnreachableError,
)

DEFAULT_URL = "http://127.0.0.1:3000"
TOKEN_VARIABLE = "OFFLOAD_API_TOKEN"
USER_VARIABLE = "OFFLOAD_API_USER"
PASSWORD_VARIABLE = "OFFLOAD_API_PASSWORD"


def default_url() -> str:
    return (os.environ.get("OFFLOAD_DAGSTER_URL") or DEFAULT_URL).rstrip("/")


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer <token>`` on every request (what oauth2-proxy and API gateways take)."""

    def __init__(self, token: str):
        self._header = f"Bearer {token}"

    def __repr__(self) -> str:
        return "BearerAuth(***)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


def credentials(environ: Mapping[str, str] | None = None) -> httpx.Auth | None:
    """The credentials the environment configures for the webserver's proxy, or None (no proxy: local).

    One kind at a time: a token and a user together are refused, as is a user without a password, so a
    typo never silently sends nothing.
    """
    env = os.environ if environ is None else environ
    token = env.get(TOKEN_VARIABLE, "").strip()
    user = env.get(USER_VARIABLE, "").strip()
    password = env.get(PASSWORD_VARIABLE, "")
    if token and (user or password):
        raise ConfigurationError(
            f"{TOKEN_VARIABLE}: set either it or {USER_VARIABLE} and {PASSWORD_VARIABLE}, not both"
        )
    if token:
        return BearerAuth(token)
    if user or password:
        if not (user and password):
            raise ConfigurationError(f"{USER_VARIABLE} and {PASSWORD_VARIABLE}: basic auth needs both")
        return httpx.BasicAuth(user, password)
    return None


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        # In the URL, credentials would be shown by every message that names it.
        raise ConfigurationError(
            f"OFFLOAD_DAGSTER_URL: must not carry credentials (user@ or user:password@); set "
            f"{TOKEN_VARIABLE}, or {USER_VARIABLE} and {PASSWORD_VARIABLE}"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError("OFFLOAD_DAGSTER_URL: must be an http:// or https:// URL with a host")
    return url


class GraphQL:
    """One webserver's GraphQL endpoint. Thread-safe (httpx.Client is), so one per process is enough.

    ``auth`` defaults to ``credentials()`` from the environment; pass one to override it.
    """

    def __init__(self, url: str | None = None, *, timeout: float = 30.0, auth: httpx.Auth | None = None):
        self.url = _check_url((url or default_url()).rstrip("/"))
        self._auth = auth if auth is not None else credentials()
        self._http = httpx.Client(
            base_url=self.url,
            auth=self._auth,
            timeout=httpx.Timeout(timeout, connect=5.0),
            transport=httpx.HTTPTransport(retries=2),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            trust_env=False,  # no .netrc credentials or proxy variables: what is sent is what is configured
        )

    def __call__(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self._http.post("/graphql", json={"query": query, "variables": variables or {}})
        except httpx.TimeoutException as error:
            raise WebserverUnreachableError(
                f"Dagster webserver at {self.url} did not answer in time ({type(error).__name__}); "
                "is it overloaded or is OFFLOAD_DAGSTER_URL wrong?"
            ) from None
        except httpx.TransportError as error:
            raise WebserverUnreachableError(
                f"Dagster webserver at {self.url} is unreachable ({error or type(error).__name__}); "
                "start it (offload dev) or set OFFLOAD_DAGSTER_URL"
            ) from None
        if response.status_code in (401, 403):
            sent = "credentials were refused" if self._auth is not None else "no credentials were sent"
            raise AuthenticationError(
                f"Dagster webserver at {self.url} answered HTTP {response.status_code}: {sent}; set "
                f"{TOKEN_VARIABLE}, or {USER_VARIABLE} and {PASSWORD_VARIABLE}, to what its proxy accepts"
            )
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict) or ("data" not in body and "errors" not in body):
            raise GraphQLError(
                f"Dagster webserver at {self.url} answered HTTP {response.status_code}, not GraphQL"
            )
        # The webserver answers HTTP 500 when a result is a PythonError (a payload rule broken in the job's
        # config mapping, say) and still sends the typed result, which is what the client reads.
        if body.get("errors"):
            messages = "; ".join(str(error.get("message")) for error in body["errors"])
            raise GraphQLError(f"GraphQL error from {self.url}: {messages}")
        data: dict[str, Any] = body["data"]
        return data

    def close(self) -> None:
        self._http.close()
