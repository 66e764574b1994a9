"""``AsyncClient``: the client's calls for asyncio apps (FastAPI, Starlette, aiohttp), same names and
answers as ``Client``.

    from offload.client import AsyncClient

    client = AsyncClient()
    handle = await client.trigger("video_pipeline", payload)
    async for run in client.subscribe(handle.id):
        print(run.status, run.metadata.get("progress"))

Each call is the ``Client`` call run in a worker thread (``asyncio.to_thread``), so the event loop never
blocks on the webserver, on the idempotency table (SQLite or Postgres, both blocking drivers) or on DNS;
the rules (payload checks, idempotency, retries grouped into one run, statuses) are the same code as the
sync client's, not a second copy. Waiting (``wait``, ``subscribe``) sleeps on the event loop between polls,
so thousands of waits cost no threads.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from offload.client import idempotency
from offload.client.api import Client
from offload.client.runs import BatchResult, Run, RunHandle, Status
from offload.client.subscribe import Subscription
from offload.exceptions import RunTimeoutError

if TYPE_CHECKING:
    import httpx


class AsyncClient:
    """The asyncio face of ``Client``; make one per process and share it."""

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = 30.0,
        idempotency_db: str | None = None,
        auth: httpx.Auth | None = None,
    ):
        self.sync = Client(url, timeout=timeout, idempotency_db=idempotency_db, auth=auth)
        self.url = self.sync.url

    @classmethod
    def from_client(cls, client: Client) -> AsyncClient:
        """The asyncio face of an existing ``Client`` (they share its connections and idempotency table)."""
        made = cls.__new__(cls)
        made.sync, made.url = client, client.url
        return made

    async def trigger(
        self,
        job: str,
        payload: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        idempotency_ttl: float | timedelta | str = idempotency.DEFAULT_TTL,
        **options: Any,
    ) -> RunHandle:
        return await asyncio.to_thread(
            self.sync.trigger,
            job,
            payload,
            idempotency_key=idempotency_key,
            idempotency_ttl=idempotency_ttl,
            **options,
        )

    async def batch_trigger(
        self, job: str, payloads: Iterable[Mapping[str, Any]], **options: Any
    ) -> BatchResult:
        return await asyncio.to_thread(self.sync.batch_trigger, job, builtins.list(payloads), **options)

    async def retrieve(self, run_id: str) -> Run:
        return await asyncio.to_thread(self.sync.retrieve, run_id)

    async def replay(self, run_id: str) -> RunHandle:
        return await asyncio.to_thread(self.sync.replay, run_id)

    async def cancel(self, run_id: str) -> None:
        await asyncio.to_thread(self.sync.cancel, run_id)

    async def list(
        self,
        job: str | None = None,
        status: Status | str | None = None,
        tag: tuple[str, str] | Mapping[str, str] | None = None,
        limit: int = 20,
    ) -> builtins.list[Run]:
        return await asyncio.to_thread(self.sync.list, job, status, tag, limit)

    async def wait(self, run_id: str, timeout: float = 600.0, poll_interval: float = 1.0) -> Run:
        """Until the run is final; ``RunTimeoutError`` after ``timeout`` seconds (the run goes on)."""
        try:
            async with asyncio.timeout(timeout):
                async for run in self.subscribe(run_id, poll_interval=poll_interval):
                    if run.is_final:
                        return run
        except TimeoutError:
            pass
        raise RunTimeoutError(f"run {run_id} did not finish within {timeout:g} s; it goes on running")

    async def trigger_and_wait(
        self, job: str, payload: Mapping[str, Any], *, timeout: float = 600.0, **options: Any
    ) -> Run:
        return await self.wait((await self.trigger(job, payload, **options)).id, timeout=timeout)

    async def subscribe(
        self,
        run_id: str | None = None,
        *,
        tag: tuple[str, str] | Mapping[str, str] | None = None,
        poll_interval: float = 0.5,
        timeout: float | None = None,
    ) -> AsyncIterator[Run]:
        """As ``Client.subscribe``, as an async iterator."""
        subscription = Subscription(self.sync, run_id, tag, poll_interval, timeout)
        while True:
            for run in await asyncio.to_thread(subscription.poll):
                yield run
            if subscription.done:
                return
            await asyncio.sleep(subscription.pause())

    def create_public_token(
        self,
        runs: Sequence[str] | None = None,
        tags: Mapping[str, str] | None = None,
        expires: float | timedelta | str = "15m",
    ) -> str:
        return self.sync.create_public_token(runs, tags, expires)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
