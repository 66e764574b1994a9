"""Realtime: how long a step's ``metadata.set`` takes to reach a browser's Server-Sent Events stream on the
gateway, alone and with 500 subscribers on one gateway process; the gateway's memory; the thin client's
import time.

1. **Import time** of ``offload.client``: ``python -c "import offload.client"`` minus ``python -c pass``,
   median of ``--imports`` runs each, in this project's venv (full install) and in a venv that holds only
   the thin client (``pip install ./clients/python``, made once under ``var/bench-thin-venv``). There also
   ``import httpx`` alone, and the import with the first ``Client()`` (which loads httpx).
2. **metadata.set -> SSE event**: a gateway (``python -m offload.webhooks serve``, one process, storing
   only, on offload's embedded SQLite instance in a temporary DAGSTER_HOME) and ``--runs`` runs in its run
   storage marked STARTED. The writer publishes through ``offload.metadata.publish``, the code path of
   ``metadata.set`` in a step (table update in one transaction + the run's ``offload/metadata`` tag; only
   the step's log line is left out), a ``sent_at`` timestamp inside the document; each subscriber reads
   its stream on a raw asyncio socket and records now - sent_at for every snapshot. Phase a: one
   subscriber, one set at a time (the next once the event arrived). Phase b: ``--subscribers`` (500)
   connections spread over the runs, while the writer sets ``--rate`` updates/s for ``--seconds``; every
   subscriber of the updated run must receive it. The gateway's RSS (psutil) idle, and at the end of b.
3. **Ingest beside the subscribers**: verified Stripe webhooks per second on the same gateway (the ingest
   benchmark's closed loop, ``--connections``) while the runs go on setting metadata at ``--rate``, with
   the ``--subscribers`` connected and then with none, alternated ``--ingest-rounds`` times. The load
   generator runs in a process of its own; the subscribers (here) compete with the gateway for the cores
   in the "with" rounds, as a browser on the same machine would. With ``--pin`` the gateway has core 0 to
   itself and everything else (this process: subscribers and writer; the load generator) shares core 1,
   so each round's line shows how much of its own core the gateway used: whether it was the limit. The
   subscribers still share a core with the load generator, so the ratio still includes their CPU.

Everything is on 127.0.0.1 and bounded. Run:
``.venv/bin/python -m benchmarks.realtime [--subscribers 500] [--runs 50] [--rate 20] [--seconds 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

from benchmarks.support.webhooks import SECRETS_ENV

ROOT = Path(__file__).resolve().parents[1]
SECRET = "benchmark-realtime-secret-0123456789abcdef"
GATEWAY_CORE, CLIENTS_CORE = 0, 1  # with --pin


CONSTRUCT = "import offload.client; offload.client.Client()"  # the first Client loads httpx


def _import_seconds(python: str, runs: int, code: str = "import offload.client") -> float:
    def once(code: str) -> float:
        started = time.perf_counter()
        subprocess.run([python, "-c", code], check=True, cwd="/")
        return time.perf_counter() - started

    samples = [once(code) - once("pass") for _ in range(runs)]
    return statistics.median(samples)


def thin_venv() -> str:
    venv = ROOT / "var" / "bench-thin-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", str(ROOT / "clients" / "python")], check=True
        )
    return str(python)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Subscriber:
    """One SSE connection on a raw socket: latency of each snapshot (receive time - its sent_at)."""

    def __init__(self, port: int, run_id: str, token: str):
        self.port, self.run_id, self.token = port, run_id, token
        self.latencies: list[float] = []
        self.received: set[int] = set()
        self.min_n = 0  # sets before this one are not counted
        self.ready = asyncio.Event()

    async def run(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(
            f"GET /realtime/runs/{self.run_id}?token={self.token} HTTP/1.1\r\nHost: bench\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                if line.startswith(b"data: {"):
                    snapshot = json.loads(line[6:])
                    if "id" not in snapshot:
                        continue
                    self.ready.set()
                    sent = snapshot["metadata"].get("sent_at")
                    n = snapshot["metadata"].get("n", 0)
                    if sent is not None and n >= self.min_n and n not in self.received:
                        self.received.add(n)
                        self.latencies.append(time.time() - sent)
        finally:
            writer.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--rate", type=float, default=20.0, help="metadata updates per second in phase b")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--sequential", type=int, default=50, help="sets in phase a")
    parser.add_argument("--imports", type=int, default=5)
    parser.add_argument("--skip-thin", action="store_true", help="no thin-client venv (import time)")
    parser.add_argument("--connections", type=int, default=128, help="webhook connections in phase c")
    parser.add_argument("--ingest-seconds", type=float, default=4.0, help="each ingest round of phase c")
    parser.add_argument("--ingest-rounds", type=int, default=2, help="with/without alternations in c")
    parser.add_argument("--pin", action="store_true", help="the gateway alone on core 0, the rest on 1")
    args = parser.parse_args(argv)
    if args.pin:
        if (os.cpu_count() or 1) < 2:
            sys.exit("--pin: needs at least 2 cores")
        os.sched_setaffinity(0, {CLIENTS_CORE})  # before any thread: they and every child inherit it
    if not 1 <= args.subscribers <= 2000 or not 1 <= args.runs <= 500 or not 0 < args.seconds <= 120:
        sys.exit("bounds: 1-2000 subscribers, 1-500 runs, at most 120 s")

    load = os.getloadavg()[0]
    full = _import_seconds(sys.executable, args.imports)
    print(f"import offload.client: {full * 1000:.0f} ms in the full venv (load {load:.1f})", flush=True)
    if not args.skip_thin:
        python = thin_venv()
        # Alternated, so that both see the same load: the client against httpx alone, its floor.
        thin = _import_seconds(python, args.imports)
        floor = _import_seconds(python, args.imports, "import httpx")
        constructed = _import_seconds(python, args.imports, CONSTRUCT)
        print(f"import offload.client: {thin * 1000:.0f} ms in the thin-client venv; import httpx there: "
              f"{floor * 1000:.0f} ms (ratio {thin / floor:.2f}); import + the first Client(): "
              f"{constructed * 1000:.0f} ms", flush=True)  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="bench-realtime-") as tmp:
        asyncio.run(_realtime(Path(tmp), args))


async def _realtime(root: Path, args: argparse.Namespace) -> None:
    home, data = root / "home", root / "data"
    home.mkdir()
    data.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OFFLOAD_", "DAGSTER_"))}
    env |= {
        "DAGSTER_HOME": str(home), "OFFLOAD_DATA_DIR": str(data), "OFFLOAD_REALTIME_SECRET": SECRET,
        "OFFLOAD_WEBHOOK_LAUNCH": "sensor", "OFFLOAD_WEBHOOK_RATE_LIMIT": "off",
        "OFFLOAD_WEBHOOK_MAX_CONNECTIONS": str(2 * (args.subscribers + args.connections) + 100),
        **SECRETS_ENV,
    }  # fmt: skip
    os.environ.update({k: env[k] for k in ("DAGSTER_HOME", "OFFLOAD_DATA_DIR", "OFFLOAD_REALTIME_SECRET")})

    import dagster as dg

    from offload import metadata
    from offload.client.tokens import create_public_token
    from offload.runtime.instance import ensure_config

    ensure_config(home)
    instance = dg.DagsterInstance.get()
    run_ids = []
    for _ in range(args.runs):
        run = dg.DagsterRun(job_name="bench", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED)
        instance.add_run(run)
        run_ids.append(run.run_id)
    port = free_port()
    log = (root / "gateway.log").open("wb")
    gateway = subprocess.Popen(
        [sys.executable, "-m", "offload.webhooks", "serve", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, {GATEWAY_CORE})) if args.pin else None,
    )  # fmt: skip
    try:
        give_up = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > give_up or gateway.poll() is not None:
                raise RuntimeError(f"gateway not ready: {(root / 'gateway.log').read_text()[-2000:]}")
            await asyncio.sleep(0.2)
        process = psutil.Process(gateway.pid)
        idle_rss = process.memory_info().rss
        tokens = {
            run_id: create_public_token(runs=[run_id], expires="1h", secret=SECRET) for run_id in run_ids
        }
        counter = 0

        def publish(run_id: str) -> None:
            nonlocal counter
            counter += 1
            n = counter
            metadata.publish(instance, run_id, run_id, lambda doc: doc | {"n": n, "sent_at": time.time()})

        # a. one subscriber, one set at a time
        one = Subscriber(port, run_ids[0], tokens[run_ids[0]])
        task = asyncio.create_task(one.run())
        await asyncio.to_thread(publish, run_ids[0])
        await asyncio.wait_for(one.ready.wait(), 60)
        for _ in range(args.sequential):
            before = len(one.latencies)
            await asyncio.to_thread(publish, run_ids[0])
            deadline = time.monotonic() + 10
            while len(one.latencies) == before and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
        task.cancel()
        lat = one.latencies[1:]
        print(f"a. 1 subscriber: metadata.set -> SSE event p50 {percentile(lat, 0.5) * 1000:.0f} ms, "
              f"p99 {percentile(lat, 0.99) * 1000:.0f} ms ({len(lat)} sets)", flush=True)  # fmt: skip

        # b. many subscribers while the runs progress
        subscribers, tasks = await _connect(port, run_ids, tokens, args.subscribers, publish)
        connected = sum(s.ready.is_set() for s in subscribers)
        for s in subscribers:
            s.latencies.clear()
            s.received.clear()
            s.min_n = counter + 1
        sent: dict[str, int] = {}
        interval, started, index = 1.0 / args.rate, time.monotonic(), 0
        cpu_before = process.cpu_times()
        while time.monotonic() - started < args.seconds:
            run_id = run_ids[index % len(run_ids)]
            await asyncio.to_thread(publish, run_id)
            sent[run_id] = sent.get(run_id, 0) + 1
            index += 1
            await asyncio.sleep(max(0.0, started + index * interval - time.monotonic()))
        await asyncio.sleep(2)  # the last events
        cpu_after = process.cpu_times()
        busy_rss = process.memory_info().rss
        latencies = [value for s in subscribers for value in s.latencies]
        expected = sum(sent.get(s.run_id, 0) for s in subscribers)
        cpu = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / args.seconds
        print(f"b. {connected}/{args.subscribers} subscribers on {len(run_ids)} runs, {index} sets in "
              f"{args.seconds:g} s: p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
              f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms; "
              f"{len(latencies)}/{expected} events received; gateway CPU {cpu:.0%} of a core",
              flush=True)  # fmt: skip
        print(f"gateway RSS: {idle_rss / 2**20:.0f} MiB idle, {busy_rss / 2**20:.0f} MiB with "
              f"{connected} subscribers", flush=True)  # fmt: skip
        # c. webhook ingest beside the subscribers, against the same gateway without them
        rates: dict[str, list[float]] = {"with": [], "without": []}
        for round_ in range(args.ingest_rounds):
            if round_ > 0:
                subscribers, tasks = await _connect(port, run_ids, tokens, args.subscribers, publish)
            rates["with"].append(await _ingest(port, args, run_ids, publish, gateway.pid))
            await _disconnect(tasks, process, port, run_ids, publish)
            rates["without"].append(await _ingest(port, args, run_ids, publish, gateway.pid))
        ratio = statistics.median(w / wo for w, wo in zip(rates["with"], rates["without"], strict=True))
        print(f"c. webhook ingest ({args.connections} connections, {args.ingest_seconds:g} s a round, "
              f"{args.rate:g} sets/s throughout): with {args.subscribers} subscribers "
              f"{', '.join(f'{r:,.0f}' for r in rates['with'])} req/s, without "
              f"{', '.join(f'{r:,.0f}' for r in rates['without'])} req/s; median ratio {ratio:.2f} "
              f"(goal >= 0.90)", flush=True)  # fmt: skip
    except BaseException:
        print((root / "gateway.log").read_text()[-3000:], flush=True)
        raise
    finally:
        gateway.terminate()
        try:
            gateway.wait(timeout=20)
        except subprocess.TimeoutExpired:
            gateway.kill()
            gateway.wait(timeout=10)
        log.close()
        instance.dispose()


async def _connect(
    port: int, run_ids: list[str], tokens: dict[str, str], count: int, publish: Callable[[str], None]
) -> tuple[list[Subscriber], list[asyncio.Task[None]]]:
    """``count`` subscribers spread over the runs, each with its first snapshot."""
    subscribers = [
        Subscriber(port, run_ids[i % len(run_ids)], tokens[run_ids[i % len(run_ids)]]) for i in range(count)
    ]
    tasks = [asyncio.create_task(s.run()) for s in subscribers]
    for run_id in run_ids:
        await asyncio.to_thread(publish, run_id)
    connected_by = time.monotonic() + 120
    while not all(s.ready.is_set() for s in subscribers) and time.monotonic() < connected_by:
        await asyncio.sleep(0.1)
    return subscribers, tasks


async def _disconnect(
    tasks: list[asyncio.Task[None]],
    process: psutil.Process,
    port: int,
    run_ids: list[str],
    publish: Callable[[str], None],
) -> None:
    """Close every subscriber and wait until the gateway holds none of their connections (a closed stream
    is noticed at its next write: one more set per run)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for run_id in run_ids:
        await asyncio.to_thread(publish, run_id)
    give_up = time.monotonic() + 60
    while time.monotonic() < give_up:
        held = [c for c in process.net_connections("tcp") if c.laddr and c.laddr.port == port and c.raddr]
        if len(held) < 10:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("the gateway still holds the closed subscribers' connections")


INGEST = """
import asyncio, json, sys
from benchmarks.webhook_ingest import Load, closed_loop, stripe_requests
port, connections, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
load = Load(stripe_requests(int(4000 * seconds)))
rate, ok, bad = asyncio.run(closed_loop(port, load, connections, seconds))
print(json.dumps({"rate": rate, "bad": bad}))
"""


async def _ingest(
    port: int,
    args: argparse.Namespace,
    run_ids: list[str],
    publish: Callable[[str], None],
    gateway_pid: int,
) -> float:
    """Verified Stripe webhooks per second (the ingest benchmark's closed loop, in a process of its own so
    that it does not share an event loop with the subscribers), while the runs go on setting metadata."""
    done = asyncio.Event()

    async def progress() -> None:
        index = 0
        while not done.is_set():
            await asyncio.to_thread(publish, run_ids[index % len(run_ids)])
            index += 1
            await asyncio.sleep(1.0 / args.rate)

    publisher = asyncio.create_task(progress())
    gateway, here = psutil.Process(gateway_pid), psutil.Process()
    cpu_before = [sum(p.cpu_times()[:2]) for p in (gateway, here)]
    started = time.monotonic()
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", INGEST, str(port), str(args.connections), str(args.ingest_seconds),
            cwd=ROOT, stdout=subprocess.PIPE,
        )  # fmt: skip
        out, _ = await child.communicate()
    finally:
        done.set()
        await publisher
    elapsed = time.monotonic() - started
    pairs = zip((gateway, here), cpu_before, strict=True)
    cpu = [(sum(process.cpu_times()[:2]) - before) / elapsed for process, before in pairs]
    print(f"   ingest round: gateway {cpu[0]:.0%} of a core, subscribers and writer {cpu[1]:.0%}", flush=True)
    if child.returncode != 0:
        raise RuntimeError("the ingest load process failed")
    result = json.loads(out.decode().strip().splitlines()[-1])
    if result["bad"]:
        raise RuntimeError(f"{result['bad']} webhooks not answered 200")
    return float(result["rate"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    main()
