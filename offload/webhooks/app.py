"""The gateway: an ASGI app (Starlette) that verifies, stores and acknowledges webhooks.

``POST /webhooks/{stripe,github,clerk}``: size check, signature check with the provider's library,
durable insert into the inbox, then 200. The run is launched after the answer, in the background
(``launch.GatewayLauncher``); no provider work happens in the request. ``GET /healthz`` says whether the
inbox answers and whether the launcher's workspace has loaded.

| answer | when |
|---|---|
| 200 ``{"received": true, "duplicate": false}`` | stored now (committed before the answer) |
| 200 ``{"received": true, "duplicate": true}`` | stored before: acknowledged, not stored again |
| 400 | signature missing or wrong, timestamp outside tolerance, malformed JSON, id missing |
| 404 / 405 | unknown provider / not POST |
| 408 | the request did not fully arrive within ``OFFLOAD_WEBHOOK_READ_TIMEOUT`` (abuse.py; then closed) |
| 431 | request line and headers over ``OFFLOAD_WEBHOOK_MAX_HEADER_BYTES`` (uvicorn's h11 answers 400 if
  they arrive in pieces: it stops buffering past the limit) |
| 413 | body over ``OFFLOAD_WEBHOOK_MAX_BYTES`` (decided from Content-Length, or while streaming) |
| 429 | the source sent more than ``OFFLOAD_WEBHOOK_RATE_LIMIT``; ``Retry-After`` says when to send again |
| 503 | the provider's secret is not configured, the inbox could not commit (the sender retries), or more
  than ``OFFLOAD_WEBHOOK_MAX_CONNECTIONS`` connections are open (uvicorn's ``limit_concurrency``) |
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import dagster as dg
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from offload.log import redact
from offload.webhooks import realtime
from offload.webhooks.abuse import RateLimiter
from offload.webhooks.inbox import Inbox, Incoming, now
from offload.webhooks.launch import GatewayLauncher
from offload.webhooks.providers import PROVIDERS, Rejected, load_libraries
from offload.webhooks.settings import GatewaySettings
from offload.webhooks.tokens import TokenEndpoint
from offload.webhooks.writer import InboxWriter

log = logging.getLogger("offload.webhooks")


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # After a 413, 429 or 431 the body is unread: closing the connection stops the sender (uvicorn would
    # otherwise read and drop the remainder to keep the connection alive).
    if status in (413, 429, 431):
        headers = {**(headers or {}), "Connection": "close"}
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or ``Rejected(413)`` as soon as it is known to exceed ``limit`` bytes: from Content-Length
    before reading anything, else while streaming (the rest is never read)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise Rejected(400, "Content-Length: must be a number")
        if int(declared) > limit:
            raise Rejected(413, f"body: larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Rejected(413, f"body: larger than {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # The sender hung up, or the read deadline closed its connection (abuse.py): nothing to store.
        raise Rejected(400, "body: connection closed before the body was complete") from None
    return b"".join(chunks)


class Gateway:
    """The app's state: settings, inbox, group-commit writer and (in ``immediate`` mode) the launcher."""

    def __init__(self, settings: GatewaySettings, instance: dg.DagsterInstance | None = None):
        load_libraries()
        self.settings = settings
        self.inbox = Inbox(settings.inbox_url)
        self.inbox.create_schema()
        self.writer = InboxWriter(self.inbox)
        self.limiter = RateLimiter(settings.rate_limit) if settings.rate_limit is not None else None
        self.launcher: GatewayLauncher | None = None
        if settings.launch == "immediate":
            self.launcher = GatewayLauncher(
                self.inbox,
                instance or dg.DagsterInstance.get(),
                {name: provider.job_name for name, provider in PROVIDERS.items()},
                claim_timeout=settings.claim_timeout,
            )
            self.launcher.start_sweep()  # runs created but never submitted, by any gateway
        for name, provider in PROVIDERS.items():
            if name not in settings.secrets:
                log.warning("%s is not set: every %s webhook is refused", provider.secret_variable, name)

    def close(self) -> None:
        self.writer.close()
        if self.launcher is not None:
            self.launcher.close()
        self.inbox.dispose()

    async def receive(self, name: str, request: Request) -> Response:
        provider = PROVIDERS[name]
        secret = self.settings.secrets.get(name)
        header_bytes = sum(len(k) + len(v) + 4 for k, v in request.scope["headers"])
        if header_bytes > self.settings.max_header_bytes:
            return _error(431, f"headers: larger than {self.settings.max_header_bytes} bytes")
        source = request.client.host if request.client is not None else "unknown"
        wait = self.limiter.check(source) if self.limiter is not None else None
        if wait is not None:
            log.info("refused %s webhook from %s: over the rate limit", name, source)
            return _error(429, "rate limit: too many requests from this source", {"Retry-After": str(wait)})
        try:
            if secret is None:
                raise Rejected(503, f"{name}: webhook secret not configured")
            body = await read_body(request, self.settings.max_bytes)
            verified = provider.verify(body, request.headers, secret)
        except Rejected as rejected:
            log.info("refused %s webhook: %s %s", name, rejected.status, rejected.reason)
            return _error(rejected.status, rejected.reason)
        event = Incoming(name, verified.event_id, verified.event_type, body.decode(), now())
        try:
            stored = await self.writer.store(event)
        except Exception as error:
            log.error("inbox could not store %s event %s: %s", name, verified.event_id, redact(str(error)))
            return _error(503, "inbox unavailable: send again later")
        if stored.unlaunched and self.launcher is not None:
            self.launcher.submit(stored.id)
        return JSONResponse({"received": True, "duplicate": not stored.new, "event_id": verified.event_id})

    async def health(self, request: Request) -> Response:
        try:
            await run_in_threadpool(self._ping)
        except Exception as error:
            return JSONResponse({"ok": False, "inbox": redact(str(error).splitlines()[0])}, status_code=503)
        launcher = "off"
        if self.launcher is not None:
            launcher = "ready" if self.launcher.workspace.loaded else "loading"
        return JSONResponse({"ok": True, "inbox": "ok", "launcher": launcher})

    def _ping(self) -> None:
        with self.inbox.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")


def create_app(
    settings: GatewaySettings | None = None, instance: dg.DagsterInstance | None = None
) -> Starlette:
    """The gateway app; settings from the environment unless given."""
    state: dict[str, Any] = {}

    def gateway() -> Gateway:
        return state["gateway"]

    def receiver(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def receive(request: Request) -> Response:
            return await gateway().receive(name, request)

        return receive

    async def health(request: Request) -> Response:
        return await gateway().health(request)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        checked = settings or GatewaySettings.from_env()
        state["gateway"] = Gateway(checked, instance)
        state["realtime"] = realtime.Realtime(
            lambda: instance or dg.DagsterInstance.get(), interval=checked.realtime_interval
        )
        state["realtime"].hub.start()
        realtime.mask_access_log()
        # Everything loaded so far (Dagster's modules among it: 170,000 objects) lives as long as the
        # process; frozen, the cyclic garbage collector stops walking it. Otherwise each full collection
        # under load stopped the event loop for 150-190 ms (measured with benchmarks/webhook_ingest.py).
        gc.freeze()
        try:
            yield
        finally:
            await state.pop("realtime").hub.stop()
            state.pop("gateway").close()

    routes = [Route(f"/webhooks/{name}", receiver(name), methods=["POST"]) for name in PROVIDERS]
    routes.append(Route("/healthz", health, methods=["GET"]))
    routes += realtime.routes(lambda: state["realtime"])  # browsers watch runs (offload/webhooks/realtime.py)
    # Wait tokens (offload/wait.py): the secret in the URL authorises the completion (tokens.py).
    routes.append(
        Route("/tokens/{token_id}/{secret}", TokenEndpoint(instance).handle, methods=["GET", "POST"])
    )
    return Starlette(routes=routes, lifespan=lifespan)
