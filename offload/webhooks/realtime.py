"""Realtime for browsers: a run's changes as Server-Sent Events on the gateway, the service that faces the
internet (the Dagster webserver stays private).

    GET /realtime/runs/{run_id}?token=...   one run: a snapshot now, then one on every change of its
                                            status, metadata or output; the final snapshot, then the end
    GET /realtime/runs?token=...            the runs carrying one of the token's tags (a user's runs),
                                            until the token expires

Each event is ``event: run`` with ``data:`` a JSON snapshot ``{id, job, status, metadata, output, error,
attempts}`` (offload's statuses; ``output`` once COMPLETED, ``error`` once failed). The token is the app's
``create_public_token`` (offload/client/tokens.py), in the ``token`` query parameter (``EventSource`` cannot
send headers) or ``Authorization: Bearer``. Missing, expired or tampered: 401. A run the token does not
grant: 404, the same answer as a run that does not exist, so a token for run A learns nothing of run B. A
stream ends when its token expires. The token is a credential: the access log (``--access-log``) masks it,
and nothing else here logs a request's URL.

Push or poll: Dagster offers no change feed, so one task per gateway process polls the instance's run
storage every ``OFFLOAD_REALTIME_INTERVAL`` seconds (0.1 by default, at least 0.05: the gateway's settings,
offload/webhooks/settings.py), whatever the number of subscribers:
one query for when each watched run family last changed (offload/runtime/run_changes.py), one per watched
tag, and one that reads the records of the families that changed; each subscriber only compares the shared
snapshots with what it last sent. The metadata comes from the run's ``offload/metadata`` tag
(offload/metadata.py), so the query that reads the status reads it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from offload.client.runs import RESULT_LABEL, cause_line, metadata_of, status_of, tag_dict
from offload.client.tokens import Grant, InvalidTokenError, signing_secret, verify_public_token
from offload.errors import CONFIGURATION_ERROR_TAG, ConfigurationError
from offload.redaction import redact
from offload.runtime import run_changes
from offload.webhooks.settings import DEFAULT_REALTIME_INTERVAL

log = logging.getLogger("offload.webhooks.realtime")

ROOT_RUN_TAG = "dagster/root_run_id"
FULL_EVERY = 10  # polls: every tenth reads every watched run's record (offload/runtime/run_changes.py)
KEEPALIVE = 15.0  # seconds between comments on a quiet stream (proxies close idle connections)
TAG_RUNS_LIMIT = 50  # newest runs per tag a tag stream shows
CORS = {"Access-Control-Allow-Origin": "*"}  # a bearer token in the URL, no cookies: any page may read


def _record(record: dg.RunRecord) -> dict[str, Any]:
    """A run record in the shape offload.client.runs reads (the webserver's GraphQL fields)."""
    run = record.dagster_run
    return {
        "runId": run.run_id,
        "jobName": run.job_name,
        "status": run.status.value,
        "tags": [{"key": k, "value": v} for k, v in run.tags.items()],
        "startTime": record.start_time,
        "endTime": record.end_time,
        "rootRunId": run.root_run_id,
        "creationTime": record.create_timestamp.timestamp(),
        "repositoryOrigin": {} if run.remote_job_origin is not None else None,
    }


class Hub:
    """The snapshots of every watched run, refreshed by one poll loop. Each stream has its own wake-up,
    set only when one of the runs (or tags) it watches changed: with one shared event, every change woke
    all streams (500 streams, 10 polls with a change a second: 5,000 wake-ups a second, which took a
    quarter of the gateway's webhook throughput; ``benchmarks/realtime.py`` phase c)."""

    def __init__(
        self, instance: Callable[[], dg.DagsterInstance], interval: float = DEFAULT_REALTIME_INTERVAL
    ):
        self._instance_of = instance
        self._instance: dg.DagsterInstance | None = None
        self.interval = interval
        self.runs: Counter[str] = Counter()
        self.tags: Counter[tuple[str, str]] = Counter()
        self.snapshots: dict[str, str] = {}  # run id -> JSON snapshot
        self.tag_runs: dict[tuple[str, str], list[str]] = {}
        self.tag_of: dict[str, dict[str, str]] = {}  # run id -> its first attempt's tags
        self._finals: dict[str, str] = {}
        self._versions: dict[str, tuple[Any, ...]] = {}
        self._polls = 0  # root run id -> its attempts' update times
        self._waiters: dict[Hashable, set[asyncio.Event]] = {}  # run id or ("tag", key, value) -> wake-ups
        self._task: asyncio.Task[None] | None = None

    @property
    def instance(self) -> dg.DagsterInstance:
        """Opened on the first subscriber: a gateway that only stores webhooks may have no instance."""
        if self._instance is None:
            self._instance = self._instance_of()
        return self._instance

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @staticmethod
    async def changed(wake: asyncio.Event, timeout: float) -> bool:
        """Wait for ``wake`` (from :meth:`watching`) at most ``timeout`` seconds; whether it was set."""
        try:
            await asyncio.wait_for(wake.wait(), timeout)
            return True
        except TimeoutError:
            return False

    @contextlib.contextmanager
    def watching(self, runs: Iterable[str], tags: Iterable[tuple[str, str]]) -> Iterator[asyncio.Event]:
        """Watch ``runs`` and ``tags``; the event is set when any of them changes (clear it, then read)."""
        runs, tags = list(runs), list(tags)
        keys: list[Hashable] = [*runs, *(("tag", *pair) for pair in tags)]
        wake = asyncio.Event()
        self.runs.update(runs)
        self.tags.update(tags)
        for key in keys:
            self._waiters.setdefault(key, set()).add(wake)
        try:
            yield wake
        finally:
            for key in keys:
                waiting = self._waiters.get(key)
                if waiting is not None:
                    waiting.discard(wake)
                    if not waiting:
                        del self._waiters[key]
            self.runs.subtract(runs)
            self.tags.subtract(tags)
            for name in [r for r, n in self.runs.items() if n <= 0]:
                del self.runs[name]
                self.snapshots.pop(name, None)
                self._finals.pop(name, None)
            for pair in [t for t, n in self.tags.items() if n <= 0]:
                del self.tags[pair]
                self.tag_runs.pop(pair, None)

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            if self.runs or self.tags:
                try:
                    updated = await run_in_threadpool(self.poll, list(self.runs), list(self.tags))
                except Exception as error:  # the storage hiccuped: try again next interval
                    log.warning(
                        "realtime poll failed: %s", redact(str(error).splitlines()[0] if str(error) else "")
                    )
                    updated = set()
                for key in updated:
                    for wake in self._waiters.get(key, ()):
                        wake.set()
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def poll(self, runs: list[str], tags: list[tuple[str, str]]) -> set[Hashable]:
        """One read of the run storage for every watched run (blocking: runs in a worker thread); the keys
        that changed: run ids, and ``("tag", key, value)`` for a tag whose runs or any of them changed."""
        changed: set[Hashable] = set()
        tag_runs: dict[tuple[str, str], list[str]] = {}
        for key, value in tags:
            tagged = self.instance.get_run_records(dg.RunsFilter(tags={key: value}), limit=TAG_RUNS_LIMIT * 2)
            roots = [r.dagster_run.root_run_id or r.dagster_run.run_id for r in tagged]
            tag_runs[(key, value)] = list(dict.fromkeys(roots))[:TAG_RUNS_LIMIT]
        ids = set(runs) | {run_id for found in tag_runs.values() for run_id in found}
        pending = [run_id for run_id in ids if run_id not in self._finals]
        self._polls += 1
        versions = run_changes.family_versions(self.instance, pending) if pending else {}
        if versions is not None and self._polls % FULL_EVERY:
            # Full records only for the families that changed since the last poll; every FULL_EVERY-th
            # poll reads them all, for what changes with time alone (a failure's retry decision grace).
            old = self._versions
            pending = [r for r in pending if r not in self.snapshots or versions.get(r) != old.get(r)]
        self._versions = versions or {}
        records: Sequence[dg.RunRecord] = []
        if pending and versions is not None:
            # The versions name every attempt of each family: one query by run id reads them all.
            attempts = [attempt for root in pending for attempt, _ in versions.get(root, ())]
            records = self.instance.get_run_records(dg.RunsFilter(run_ids=attempts)) if attempts else []
        elif pending:
            records = [
                *self.instance.get_run_records(dg.RunsFilter(run_ids=pending)),
                *self.instance.get_run_records(dg.RunsFilter(tags={ROOT_RUN_TAG: pending})),
            ]
        groups: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            shaped = _record(record)
            groups.setdefault(shaped["rootRunId"] or shaped["runId"], []).append(shaped)
        for run_id in ids:
            if run_id in self._finals:
                text = self._finals[run_id]
            elif run_id in groups:
                text, final = self._snapshot(run_id, groups[run_id])
                if final:
                    self._finals[run_id] = text
            else:
                continue  # unchanged since the last poll, or not (yet) in the storage
            if self.snapshots.get(run_id) != text:
                self.snapshots[run_id] = text
                changed.add(run_id)
        for pair, found in tag_runs.items():
            if found != self.tag_runs.get(pair) or not changed.isdisjoint(found):
                changed.add(("tag", *pair))
        self.tag_runs = tag_runs
        return changed

    def _snapshot(self, run_id: str, group: list[dict[str, Any]]) -> tuple[str, bool]:
        attempts = sorted(group, key=lambda record: record["creationTime"])
        first = next((r for r in attempts if r["runId"] == run_id), attempts[0])
        current = attempts[-1]
        self.tag_of[run_id] = tag_dict(first)
        status = status_of(current)
        output = error = None
        if status.is_final:
            output, error = self._outcome(current, status.value)
        snapshot = {
            "id": run_id,
            "job": first["jobName"],
            "status": status.value,
            "metadata": metadata_of(current, attempts),
            "output": output,
            "error": error,
            "attempts": len(attempts),
        }
        return json.dumps(snapshot, separators=(",", ":"), default=str), status.is_final

    def _outcome(self, record: Mapping[str, Any], status: str) -> tuple[Any, str | None]:
        """A final run's output (COMPLETED) or one-line error (failed), read once from its events."""
        if status == "CANCELED":
            return None, None
        tags = tag_dict(record)
        if status != "COMPLETED" and tags.get(CONFIGURATION_ERROR_TAG):
            return None, redact(tags[CONFIGURATION_ERROR_TAG])
        kinds = {dg.DagsterEventType.STEP_OUTPUT} if status == "COMPLETED" else {
            dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE
        }  # fmt: skip
        records = self.instance.get_records_for_run(record["runId"], of_type=kinds, limit=10000).records
        if status == "COMPLETED":
            output = None
            for entry in records:
                event = entry.event_log_entry.dagster_event
                data = getattr(event, "event_specific_data", None) if event is not None else None
                value = (getattr(data, "metadata", None) or {}).get(RESULT_LABEL)
                if value is not None:
                    output = value.value
            return output, None
        for entry in records:
            event = entry.event_log_entry.dagster_event
            data = getattr(event, "event_specific_data", None) if event is not None else None
            error = getattr(data, "error", None)
            line = cause_line(_error_dict(error)) if error is not None else None
            if line:
                step = getattr(event, "step_key", None)
                return None, redact(f"{step}: {line}" if step else line)
        return None, f"run ended {status}"


def _error_dict(error: Any) -> dict[str, Any]:
    """Dagster's SerializableErrorInfo as the GraphQL PythonError fields ``cause_line`` reads."""
    causes = []
    cause = getattr(error, "cause", None)
    while cause is not None:
        causes.append({"message": cause.message, "className": cause.cls_name})
        cause = getattr(cause, "cause", None)
    return {"message": error.message, "className": error.cls_name, "causes": causes}


def _denied(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers={**CORS, "Cache-Control": "no-store"})


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query_params.get("token")


class Realtime:
    """The realtime routes' state: the hub and the signing secret (``OFFLOAD_REALTIME_SECRET``)."""

    def __init__(
        self,
        instance: Callable[[], dg.DagsterInstance],
        environ: Mapping[str, str] | None = None,
        interval: float = DEFAULT_REALTIME_INTERVAL,
    ):
        self.hub = Hub(instance, interval)
        try:
            self.secret: str | None = signing_secret(environ)
        except ConfigurationError as error:
            self.secret = None
            log.warning("realtime is off: %s", error)

    def _grant(self, request: Request) -> Grant | Response:
        if self.secret is None:
            return _denied(503, "realtime: OFFLOAD_REALTIME_SECRET is not set on the gateway")
        try:
            return verify_public_token(_token(request), secret=self.secret)
        except InvalidTokenError as error:
            return _denied(401, str(error))

    async def run_stream(self, request: Request) -> Response:
        grant = self._grant(request)
        if not isinstance(grant, Grant):
            return grant
        run_id = request.path_params["run_id"]
        if run_id not in grant.runs:
            tags = await run_in_threadpool(self._tags_of, run_id)
            if tags is None or not grant.allows(run_id, tags):
                return _denied(404, f"run {run_id}: not found")
        return self._stream(grant, lambda: [run_id], [run_id], [], single=True)

    async def tag_stream(self, request: Request) -> Response:
        grant = self._grant(request)
        if not isinstance(grant, Grant):
            return grant
        if not grant.tags:
            return _denied(404, "this token names runs, not tags: use /realtime/runs/{run_id}")
        hub = self.hub

        def runs() -> list[str]:
            found = [run_id for pair in grant.tags for run_id in hub.tag_runs.get(pair, [])]
            return list(dict.fromkeys(found))

        return self._stream(grant, runs, [], grant.tags, single=False)

    def _tags_of(self, run_id: str) -> dict[str, str] | None:
        run = self.hub.instance.get_run_by_id(run_id)
        return dict(run.tags) if run is not None else None

    def _stream(
        self,
        grant: Grant,
        runs: Callable[[], list[str]],
        watch_runs: list[str],
        watch_tags: Iterable[tuple[str, str]],
        *,
        single: bool,
    ) -> Response:
        hub = self.hub

        async def events() -> AsyncIterator[str]:
            with hub.watching(watch_runs, watch_tags) as wake:
                sent: dict[str, str] = {}
                yield "retry: 2000\n\n"
                while True:
                    wake.clear()  # before reading: a change from now on wakes the wait below
                    for run_id in runs():
                        text = hub.snapshots.get(run_id)
                        if text is not None and sent.get(run_id) != text:
                            sent[run_id] = text
                            yield f"event: run\ndata: {text}\n\n"
                            if single and run_id in hub._finals:
                                yield "event: end\ndata: {}\n\n"
                                return
                    left = grant.expires_at - time.time()
                    if left <= 0:
                        yield 'event: end\ndata: {"reason":"token expired"}\n\n'
                        return
                    if not await hub.changed(wake, min(KEEPALIVE, left)):
                        yield ": keepalive\n\n"

        headers = {**CORS, "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


class _MaskTokens(logging.Filter):
    """uvicorn's access log writes the request's path with its query string: mask the token in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def mask_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _MaskTokens) for f in access.filters):
        access.addFilter(_MaskTokens())


def routes(realtime: Callable[[], Realtime]) -> list[Route]:
    async def run_stream(request: Request) -> Response:
        return await realtime().run_stream(request)

    async def tag_stream(request: Request) -> Response:
        return await realtime().tag_stream(request)

    return [
        Route("/realtime/runs/{run_id}", run_stream, methods=["GET"]),
        Route("/realtime/runs", tag_stream, methods=["GET"]),
    ]
