"""Webhook gateway: verified ingest throughput against a bare Starlette endpoint, latency at half load,
and how long an event takes from being received to its run starting.

1. **Ingest** (same run, same server settings: one uvicorn worker each, both with the settings the gateway
   ships with, ``python -m offload.webhooks serve``'s: its h11 protocol with the read deadline, the header,
   connection and keep-alive bounds (offload/webhooks/abuse.py), no access log, log level info. uvicorn's
   own defaults (httptools) would measure a server the gateway does not run on):
   - baseline: a Starlette ``POST /hello`` that reads the body and answers ``{"ok": true}``, started by
     this module (``--serve-hello PORT``) with ``uvicorn.run`` and the same options ``serve`` passes;
   - gateway: ``python -m offload.webhooks serve``, ``POST /webhooks/stripe`` with real Stripe events
     (distinct ids, signed up front with Stripe's library): signature check with
     ``stripe.WebhookSignature.verify_header``, insert committed to the SQLite inbox (WAL, synchronous
     FULL: an fsync per commit, shared by the requests of a group commit), then 200. The gateway stores
     only (``OFFLOAD_WEBHOOK_LAUNCH=sensor``): launching is not part of ingest, and thousands of runs would
     swamp the machine. Its per-source rate limit is off (``OFFLOAD_WEBHOOK_RATE_LIMIT=off``): all the
     load comes from one address (the check costs 10 us a request).
   Closed loop (``--connections`` keep-alive connections, default 128, each sending its next request on
   the answer) for ``--seconds``, baseline and gateway alternated ``--rounds`` times; the best round of
   each is the maximum, and the ratio is the best gateway round over the best baseline round (the ratio
   of each round with the baseline round just before it is printed too: on a shared machine, rounds vary
   more than the two servers do). Then an open loop at half the gateway's maximum: requests go out on a fixed
   schedule and latency counts from the scheduled time, so a stall is not hidden (no coordinated omission).
   Why 128 connections: a maximum is measured where the server is saturated. The baseline is at 32
   already (its rate is the same at 32, 64 and 128); the gateway is not: each request waits for its group's
   fsync, so at 32 connections the loop idles during commits and the rate is set by commit latency
   (measured at 32 / 64 / 128: 1,150-1,225 / 1,255-1,300 / 1,403-1,440 req/s), not by its CPU.
   The load generator is a few lines of asyncio on raw sockets, so that it spends far less CPU per
   request than the servers it measures (httpx's client costs about as much as the server here).
2. **Received -> run started**: a Dagster daemon and the gateway launching at once, on offload's embedded
   instance (its coordinator starts a run that would not wait from the gateway itself, in a worker forked
   from the gateway's preloaded server); ``--events`` GitHub pushes sent one by one, after one
   unmeasured warm-up; for each: received (the inbox row) -> run created -> run started (``RUN_START``),
   read from the run storage.
3. **Launch path**: the gateway's ``create_run`` (Dagster instance API) against
   ``DagsterGraphQLClient.submit_job_execution`` through a webserver, alternated, same job and config.
4. **Sustained launching** (``--sustained RATE``, alone): a daemon and the gateway launching at once, as in
   2; GitHub pushes sent on a fixed schedule at RATE events/s for ``--sustained-seconds`` (max 120), each
   run executed. Every 5 s it samples the backlog (events received without a run yet, runs created but not
   started); at the end, received -> run created / run started p50 and p90 over every event, and how long
   the backlog took to drain (bounded: 300 s). A backlog that keeps growing through the load, and is still
   there long after, means launching does not keep up with the rate.

Every request goes to 127.0.0.1; counts and durations are bounded. Run:
``.venv/bin/python -m benchmarks.webhook_ingest [--seconds 5] [--rounds 2] [--events 15] [--skip-runs]``,
or ``... --sustained 10 [--sustained-seconds 60]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from benchmarks.run_throughput import GroupSampler
from benchmarks.support import services
from benchmarks.support.waiting import free_port, wait_for
from benchmarks.support.webhooks import (
    SECRETS_ENV,
    body_of,
    github_headers,
    github_push,
    stripe_event,
    stripe_headers,
)

MAX_REQUESTS = 300_000  # per measurement, whatever the rate


async def _hello(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"ok": True})


hello_app = Starlette(routes=[Route("/hello", _hello, methods=["POST"])])
"""The baseline: ``python -m uvicorn benchmarks.webhook_ingest:hello_app``."""


# -- load generation -------------------------------------------------------------------------------------


def _request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items() if name.lower() != "content-length"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


class Load:
    """Pre-built requests handed out in order, each at most once."""

    def __init__(self, requests: Sequence[bytes]):
        self.requests = requests
        self.next = 0

    def take(self) -> bytes | None:
        if self.next >= len(self.requests):
            return None
        self.next += 1
        return self.requests[self.next - 1]


async def closed_loop(port: int, load: Load, connections: int, seconds: float) -> tuple[float, int, int]:
    """Requests per second, answers 200 and others, with ``connections`` connections sending back to back."""
    ok = bad = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal ok, bad
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline and (request := load.take()) is not None:
                if await _exchange(reader, writer, request) == 200:
                    ok += 1
                else:
                    bad += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return (ok + bad) / (time.perf_counter() - started), ok, bad


async def open_loop(port: int, load: Load, rate: float, seconds: float, connections: int) -> list[float]:
    """Latencies (s) of requests sent at ``rate`` per second on a fixed schedule, from the scheduled time."""
    total = min(int(rate * seconds), len(load.requests) - load.next)
    interval = 1.0 / rate
    start = time.perf_counter() + 0.2
    latencies: list[float] = []
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))

    async def one(index: int, request: bytes) -> None:
        scheduled = start + index * interval
        connection = await pool.get()  # more connections than in flight: no waiting here at half load
        try:
            assert await _exchange(*connection, request) == 200
        finally:
            pool.put_nowait(connection)
        latencies.append(time.perf_counter() - scheduled)

    tasks = []
    for index in range(total):
        delay = start + index * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        request = load.take()
        assert request is not None
        tasks.append(asyncio.create_task(one(index, request)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait()[1].close()
    return latencies


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


# -- 1. ingest -------------------------------------------------------------------------------------------


def serve_hello(port: int) -> None:
    """The baseline under the gateway's own uvicorn settings (``python -m offload.webhooks serve``: the
    abuse limits' protocol and bounds, no access log), so that the two servers differ only in the app."""
    import uvicorn

    from offload.webhooks.settings import GatewaySettings

    uvicorn.run(
        hello_app,
        host="127.0.0.1",
        port=port,
        log_level="info",  # serve's default; neither server logs per request (no access log)
        access_log=False,
        **GatewaySettings.from_env().uvicorn_options(),
    )


def hello_server(port: int, env: dict[str, str], log: Path) -> services.Service:
    args = [sys.executable, "-m", "benchmarks.webhook_ingest", "--serve-hello", str(port)]
    return services.Service("hello", args, env, log)


def stripe_requests(count: int) -> list[bytes]:
    requests = []
    for _ in range(count):
        body = body_of(stripe_event())
        requests.append(_request("/webhooks/stripe", body, stripe_headers(body)))
    return requests


def ingest(root: Path, seconds: float, rounds: int, connections: int) -> dict[str, Any]:
    env = {
        **os.environ,
        **SECRETS_ENV,
        "OFFLOAD_WEBHOOK_LAUNCH": "sensor",
        "OFFLOAD_WEBHOOK_RATE_LIMIT": "off",  # all load comes from one address
        "DAGSTER_HOME": str(root / "home"),
        "OFFLOAD_WEBHOOK_INBOX_URL": f"sqlite:///{root / 'inbox.db'}",
        "OFFLOAD_DATA_DIR": str(root),
    }
    hello_port, gateway_port = free_port(), free_port()
    hello = hello_server(hello_port, env, root / "hello.log").start()
    gateway = services.gateway(env, gateway_port, root / "gateway.log").start()
    try:
        wait_for(lambda: services.gateway_ready(gateway_port, "off"), 60, "the gateway")
        wait_for(lambda: _hello_up(hello_port), 60, "the baseline")
        hello_body = body_of(stripe_event())
        results: dict[str, list[float]] = {"hello": [], "gateway": []}
        sent = 0
        for _ in range(rounds):
            hello_load = Load(
                [_request("/hello", hello_body, {"Content-Type": "application/json"})] * MAX_REQUESTS
            )
            rate, _, bad = asyncio.run(closed_loop(hello_port, hello_load, connections, seconds))
            assert bad == 0
            results["hello"].append(rate)
            gateway_load = Load(
                stripe_requests(min(MAX_REQUESTS, int(max(results["hello"]) * seconds * 1.2)))
            )
            rate, ok, bad = asyncio.run(closed_loop(gateway_port, gateway_load, connections, seconds))
            assert bad == 0, f"{bad} requests not answered 200"
            sent += ok
            results["gateway"].append(rate)
        best_gateway = max(results["gateway"])
        half = best_gateway / 2
        latency_load = Load(stripe_requests(int(half * seconds) + 10))
        latencies = asyncio.run(open_loop(gateway_port, latency_load, half, seconds, connections=64))
        sent += len(latencies)
        from offload.webhooks.inbox import Inbox

        inbox = Inbox(f"sqlite:///{root / 'inbox.db'}")
        stored = sum(inbox.counts().values())
        inbox.dispose()
        assert stored == sent, f"{sent} answered 200 but {stored} stored"
        return {
            "hello_rps": results["hello"],
            "gateway_rps": results["gateway"],
            "ratio": best_gateway / max(results["hello"]),
            "half_rate": half,
            "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
            "stored": stored,
        }
    finally:
        gateway.stop()
        hello.stop()


# -- 2. received -> run started --------------------------------------------------------------------------


def run_latency(root: Path, events: int) -> dict[str, list[float]]:
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    from offload.webhooks.event import run_id_for
    from offload.webhooks.inbox import Inbox

    home = services.write_instance(root / "runs-home")
    inbox_url = f"sqlite:///{root / 'runs-inbox.db'}"
    env = {
        **os.environ,
        **SECRETS_ENV,
        "DAGSTER_HOME": str(home),
        "OFFLOAD_DATA_DIR": str(root / "runs-data"),
        "OFFLOAD_WEBHOOK_INBOX_URL": inbox_url,
        "OFFLOAD_WEBHOOK_LAUNCH": "immediate",
    }
    port = free_port()
    daemon = services.daemon(env, root / "daemon.log").start()
    gateway = services.gateway(env, port, root / "gateway-runs.log").start()
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    inbox = Inbox(inbox_url)
    found: dict[str, list[float]] = {"created": [], "started": []}
    try:
        wait_for(lambda: services.gateway_ready(port, "ready"), 180, "the gateway's workspace")
        import httpx

        # One unmeasured event first: the daemon's first launch starts offload's fork server (imports the
        # code location once), which a deployment that has been up for a while has done long before.
        for n in range(events + 1):
            delivery = str(uuid.uuid4())
            body = body_of(github_push())
            assert (
                httpx.post(
                    f"http://127.0.0.1:{port}/webhooks/github",
                    content=body,
                    headers=github_headers(body, delivery=delivery),
                    timeout=30,
                ).status_code
                == 200
            )
            run_id = run_id_for("github", delivery)

            record = wait_for(partial(_started, instance, run_id), 120, "the run to start")
            row = inbox.find("github", delivery)
            assert row is not None
            received = row.received_at.timestamp()
            if n > 0:
                found["created"].append(record.create_timestamp.timestamp() - received)
                found["started"].append(record.start_time - received)
            wait_for(partial(_finished, instance, run_id), 120, "the run to finish")
        return found
    finally:
        inbox.dispose()
        gateway.stop()
        daemon.stop()
        instance.dispose()


# -- 4. sustained launching ------------------------------------------------------------------------------


def sustained(root: Path, rate: float, seconds: float) -> dict[str, Any]:
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    from offload.webhooks.event import PROVIDER_TAG
    from offload.webhooks.inbox import Inbox

    home = services.write_instance(root / "sustained-home")
    inbox_url = f"sqlite:///{root / 'sustained-inbox.db'}"
    env = {
        **os.environ,
        **SECRETS_ENV,
        "DAGSTER_HOME": str(home),
        "OFFLOAD_DATA_DIR": str(root / "sustained-data"),
        "OFFLOAD_WEBHOOK_INBOX_URL": inbox_url,
        "OFFLOAD_WEBHOOK_LAUNCH": "immediate",
    }
    port = free_port()
    daemon = services.daemon(env, root / "sustained-daemon.log").start()
    gateway = services.gateway(env, port, root / "sustained-gateway.log").start()
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    inbox = Inbox(inbox_url)
    total = int(rate * seconds)
    samples: list[
        tuple[float, int, int]
    ] = []  # (seconds since the first send, unlaunched rows, unstarted runs)
    waiting = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING]

    def backlog() -> tuple[int, int]:
        unlaunched = inbox.counts().get("received", 0)
        runs = instance.get_runs_count(dg.RunsFilter(statuses=waiting, tags={PROVIDER_TAG: "github"}))
        return unlaunched, runs

    try:
        wait_for(lambda: services.gateway_ready(port, "ready"), 180, "the gateway's workspace")
        requests = []
        for _ in range(total):
            body = body_of(github_push())
            requests.append(_request("/webhooks/github", body, github_headers(body)))
        stop = False

        async def sampler(started: float) -> None:
            while not stop:
                samples.append((time.perf_counter() - started, *await asyncio.to_thread(backlog)))
                await asyncio.sleep(5)

        async def drive() -> list[float]:
            nonlocal stop
            task = asyncio.create_task(sampler(time.perf_counter()))
            latencies = await open_loop(port, Load(requests), rate, seconds, connections=16)
            stop = True
            await task
            return latencies

        busy_before = busy_cpu_seconds()
        with GroupSampler(gateway.pid) as at_gateway, GroupSampler(daemon.pid) as at_daemon:
            before = {"gateway": at_gateway.by_role(), "daemon": at_daemon.by_role()}
            answer_latencies = asyncio.run(drive())
            load_ended = time.perf_counter()
            try:
                wait_for(lambda: backlog() == (0, 0), 300, "the backlog to drain", interval=1.0)
                drain_seconds = time.perf_counter() - load_ended
            except AssertionError:
                drain_seconds = float("nan")  # not within 300 s
        machine_cpu = busy_cpu_seconds() - busy_before
        cpu_by_role = {
            f"{side} {name}": seconds - before[side].get(name, 0.0)
            for side, sampler in (("gateway", at_gateway), ("daemon", at_daemon))
            for name, seconds in sampler.by_role().items()
        }
        created: list[float] = []
        started: list[float] = []
        durations: list[float] = []  # a run's start to its end: with the cap on runs at once, the pace
        spans: list[tuple[float, float]] = []
        rows = {row.run_id: row for row in inbox.in_status("launched", limit=100_000) if row.run_id}
        rows |= {row.run_id: row for row in inbox.in_status("succeeded", limit=100_000) if row.run_id}
        for record in instance.get_run_records(dg.RunsFilter(tags={PROVIDER_TAG: "github"})):
            row = rows.get(record.dagster_run.run_id)
            if row is None or record.start_time is None:
                continue
            received = row.received_at.timestamp()
            created.append(record.create_timestamp.timestamp() - received)
            started.append(record.start_time - received)
            if record.end_time is not None:
                durations.append(record.end_time - record.start_time)
                spans.append((record.start_time, record.end_time))
        return {
            "sent": total, "answer_p99_ms": percentile(answer_latencies, 99) * 1000, "samples": samples,
            "created": created, "started": started, "drain_seconds": drain_seconds,
            "durations": durations, "peak_running": peak_overlap(spans),
            "machine_cpu": machine_cpu, "cpu_by_role": cpu_by_role,
        }  # fmt: skip
    finally:
        inbox.dispose()
        gateway.stop()
        daemon.stop()
        instance.dispose()


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``: all but idle and iowait):
    every process counted, the short-lived ones a sampler misses included."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def peak_overlap(spans: list[tuple[float, float]]) -> int:
    """The most of ``spans`` (start, end) open at one instant."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


# -- 3. launch path --------------------------------------------------------------------------------------


def launch_paths(root: Path, repeat: int) -> dict[str, list[float]]:
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef
    from dagster_graphql import DagsterGraphQLClient

    from offload.webhooks.event import WebhookEvent, run_tags
    from offload.webhooks.launch import Workspace, create_run, run_config

    home = services.write_instance(root / "paths-home", run_queue={"max_concurrent_runs": 0})  # queued only
    env = {**os.environ, "DAGSTER_HOME": str(home), "OFFLOAD_DATA_DIR": str(root / "paths-data")}
    port = free_port()
    executable = str(Path(sys.executable).with_name("dagster-webserver"))
    webserver = services.Service(
        "webserver",
        [executable, "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        env,
        root / "webserver.log",
    ).start()
    os.environ["DAGSTER_HOME"] = str(home)
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    workspace = Workspace(instance, Path("workspace.yaml").resolve())
    timings: dict[str, list[float]] = {"instance API": [], "GraphQL": []}
    try:
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        wait_for(lambda: _up(port), 180, "the webserver")
        context = workspace.request_context(timeout=180)
        for index in range(repeat + 1):  # the first of each warms caches and is not counted
            event = WebhookEvent(
                provider="github",
                event_id=str(uuid.uuid4()),
                event_type="push",
                received_at="2026-01-01T00:00:00+00:00",
                body=body_of(github_push()).decode(),
            )
            started = time.perf_counter()
            create_run(
                instance,
                context,
                "github_webhook",
                run_config(event),
                run_tags("github", event.event_id),
                str(uuid.uuid4()),
            )
            elapsed = time.perf_counter() - started
            if index:
                timings["instance API"].append(elapsed)
            started = time.perf_counter()
            client.submit_job_execution(
                "github_webhook", run_config=run_config(event), tags=run_tags("github", event.event_id)
            )
            elapsed = time.perf_counter() - started
            if index:
                timings["GraphQL"].append(elapsed)
        return timings
    finally:
        workspace.close()
        webserver.stop()
        instance.dispose()


def _started(instance: Any, run_id: str) -> Any:
    record = instance.get_run_record_by_id(run_id)
    return record if record is not None and record.start_time is not None else None


def _finished(instance: Any, run_id: str) -> bool:
    run = instance.get_run_by_id(run_id)
    return run is not None and run.is_finished


def _up(port: int) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _hello_up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-hello", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each load phase (max 30)")
    parser.add_argument("--rounds", type=int, default=2, help="baseline/gateway alternations (max 5)")
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--events", type=int, default=15, help="events timed to run start (max 50)")
    parser.add_argument("--skip-runs", action="store_true", help="ingest only (no daemon, no runs)")
    parser.add_argument("--sustained", type=float, metavar="RATE", help="only: launch RATE events/s (max 20)")
    parser.add_argument(
        "--sustained-seconds", type=float, default=60.0, help="length of --sustained (max 120)"
    )
    args = parser.parse_args()
    if args.serve_hello:
        serve_hello(args.serve_hello)
        return
    if args.sustained:
        rate, length = min(args.sustained, 20.0), min(args.sustained_seconds, 120.0)
        print(f"load average before: {load_average()} ({os.cpu_count()} cores)")
        with tempfile.TemporaryDirectory(prefix="webhook-bench-") as tmp:
            found = sustained(Path(tmp), rate, length)
        print(f"sent {found['sent']} GitHub pushes at {rate:g}/s for {length:g} s "
              f"(answers p99 {found['answer_p99_ms']:.0f} ms)")  # fmt: skip
        for at, unlaunched, unstarted in found["samples"]:
            print(f"  t={at:5.1f} s: {unlaunched:4} events without a run, {unstarted:4} runs not started yet")
        print(f"backlog drained {found['drain_seconds']:.1f} s after the last send")
        for name in ("created", "started"):
            values = found[name]
            p50, p90 = statistics.median(values), percentile(values, 90)
            print(f"received -> run {name:8}: p50 {p50:.2f} s, p90 {p90:.2f} s, max {max(values):.2f} s "
                  f"(n={len(values)})")  # fmt: skip
        durations = found["durations"]
        print(f"run start -> end         : p50 {statistics.median(durations):.2f} s, "
              f"p90 {percentile(durations, 90):.2f} s; "
              f"at most {found['peak_running']} runs at once")  # fmt: skip
        runs = len(found["started"])
        print(f"CPU per run              : {found['machine_cpu'] / runs:.3f} s, the whole machine from the "
              "first send to the drain")  # fmt: skip
        print("  by process, sampled every 0.1 s (short-lived processes undercounted):")
        for name, seconds in sorted(found["cpu_by_role"].items(), key=lambda item: -item[1]):
            print(f"  {name:22}: {seconds / runs:.3f} s")
        print(f"load average after: {load_average()}")
        return
    seconds, rounds, events = min(args.seconds, 30.0), min(args.rounds, 5), min(args.events, 50)
    print(f"load average before: {load_average()} ({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory(prefix="webhook-bench-") as tmp:
        root = Path(tmp)
        result = ingest(root, seconds, rounds, args.connections)
        print(f"bare Starlette /hello      : {', '.join(f'{r:,.0f}' for r in result['hello_rps'])} req/s")
        print(
            f"gateway, verified + stored : {', '.join(f'{r:,.0f}' for r in result['gateway_rps'])} req/s"
            f" ({result['stored']:,} events committed, all answered 200)"
        )
        print(f"ratio gateway / hello      : {result['ratio']:.2f}  (target >= 0.5; best round of each)")
        paired = [g / h for g, h in zip(result["gateway_rps"], result["hello_rps"], strict=True)]
        print(f"  round by round           : {', '.join(f'{r:.2f}' for r in paired)}")
        print(
            f"at {result['half_rate']:,.0f} req/s (half the max): p50 {result['p50_ms']:.1f} ms, "
            f"p99 {result['p99_ms']:.1f} ms  (target p99 < 50 ms)"
        )
        print(f"load average after ingest: {load_average()}")
        if args.skip_runs:
            return
        paths = launch_paths(root, repeat=8)
        for name, values in paths.items():
            print(
                f"launch path {name:13}: median {statistics.median(values) * 1000:.0f} ms, "
                f"max {max(values) * 1000:.0f} ms (create + submit, n={len(values)})"
            )
        latency = run_latency(root, events)
        for name, values in latency.items():
            print(
                f"received -> run {name:8}: median {statistics.median(values):.2f} s, "
                f"p90 {percentile(values, 90):.2f} s, min {min(values):.2f} s, max {max(values):.2f} s "
                f"(n={len(values)})"
            )
        print(f"load average after runs: {load_average()}")


if __name__ == "__main__":
    main()
