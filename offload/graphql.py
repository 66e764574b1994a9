"""The client's transport: GraphQL requests to the Dagster webserver over httpx.

Explicit timeouts; a refused or timed-out connection becomes ``WebserverUnreachableError`` naming the URL and
the setting that changes it; GraphQL-level errors become ``GraphQLError``. Connection attempts are retried
(nothing was sent yet, so even a mutation is safe to resend); answers are never retried here.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from offload.errors import GraphQLError, WebserverUnreachableError

DEFAULT_URL = "http://127.0.0.1:3000"


def default_url() -> str:
    return (os.environ.get("OFFLOAD_DAGSTER_URL") or DEFAULT_URL).rstrip("/")


class GraphQL:
    """One webserver's GraphQL endpoint. Thread-safe (httpx.Client is), so one per process is enough."""

    def __init__(self, url: str | None = None, *, timeout: float = 30.0):
        self.url = (url or default_url()).rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(timeout, connect=5.0),
            transport=httpx.HTTPTransport(retries=2),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
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
