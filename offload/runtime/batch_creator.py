"""The batch creator: makes the runs of the batches clients wrote (offload/client/batches.py).

It lives in a process that holds the Dagster workspace: the webserver of ``offload dev``
(``offload/runtime/dev_server.py`` starts it), or any process that calls :func:`start` with its instance
and workspace. It polls the batch items table (every ``poll`` seconds while idle, at once while there is
work), claims up to ``CHUNK`` pending items and creates their runs on a few threads with
``offload/runtime/run_factory.py``: the item's own run id, so a run made twice is refused by the run
storage; a config the job refuses is recorded as that item's error (the CLI's lines), the rest are created.

An item with its own idempotency key goes through the keys table as ``Client.trigger`` does: a live run
of the key is the item's run (no new run); a failed one frees the key.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dagster as dg
from dagster._core.errors import DagsterRunAlreadyExists

from offload.client import batch_store, batches, idempotency
from offload.client.runs import status_of
from offload.errors import PayloadError
from offload.runtime import event_log_files
from offload.runtime.run_factory import JobNotFound, RunFactory, one_line

log = logging.getLogger("offload.runtime.batch_creator")

CHUNK = 50  # items claimed at a time
THREADS = 4
POLL_SECONDS = 0.2


class BatchCreator:
    def __init__(
        self,
        instance: dg.DagsterInstance,
        request_context: Callable[[], Any],
        store_url: str | None = None,
        threads: int = THREADS,
        poll: float = POLL_SECONDS,
    ):
        event_log_files.install()  # each new run's SQLite event log file: copied, not built (0.5 s a run)
        self.factory = RunFactory(instance, request_context)
        self.instance = instance
        self._request_context = request_context
        self.store_url = store_url or idempotency.default_url()
        self._store: batch_store.BatchStore | None = None
        self._keys: idempotency.IdempotencyStore | None = None
        self.poll = poll
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="batch-create")
        self._stop = threading.Event()
        self.token = uuid.uuid4().hex

    @property
    def store(self) -> batch_store.BatchStore:
        """The batches' tables, opened on first use in the creator's thread: a database that is away when
        the hosting process (the webserver) starts delays batches, never the process."""
        if self._store is None:
            self._store = batch_store.BatchStore(self.store_url)
        return self._store

    @property
    def keys(self) -> idempotency.IdempotencyStore:
        if self._keys is None:
            self._keys = idempotency.IdempotencyStore(self.store_url)
        return self._keys

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="batch-creator", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def run(self) -> None:
        """Until :meth:`stop`: create whatever is pending."""
        while not self._stop.is_set():
            try:
                done = self.run_once()
            except Exception as error:  # the database or the workspace is away: try again shortly
                log.warning("batch creator: %s", one_line(error))
                self._stop.wait(5.0)
                continue
            if not done:
                self._stop.wait(self.poll)

    def run_once(self) -> int:
        """Claim and create one chunk; how many items it held."""
        items = self.store.claim(self.token, CHUNK)
        if not items:
            return 0
        context = self._request_context()
        _ = self.keys  # opened here, not by the pool's threads at once
        list(self._pool.map(lambda item: self._create(item, context), items))
        return len(items)

    def _create(self, item: batches.ItemRow, context: Any) -> None:
        try:
            if item.idempotency_key is None:
                self._make(item, item.run_id, context)
            else:
                self._make_keyed(item, item.idempotency_key, context)
        except PayloadError as error:
            self.store.finish(item, None, {"kind": "payload", "lines": list(error.lines)})
        except JobNotFound as error:
            self.store.finish(item, None, {"kind": "job", "lines": [str(error)]})
        except Exception as error:
            # Transient (code server restarting, database busy): the claim goes stale and the item is
            # tried again then.
            log.warning("batch %s item %s: %s", item.batch_id, item.index, one_line(error))

    def _make(self, item: batches.ItemRow, run_id: str, context: Any) -> str:
        tags = {**item.tags, batches.BATCH_TAG: item.batch_id, batches.BATCH_INDEX_TAG: str(item.index)}
        try:
            self.factory.create(item.job, item.config, tags, run_id, context=context)
        except DagsterRunAlreadyExists:
            self.factory.submit_if_not_started(run_id, context)  # made by a creator that died before
        self.store.finish(item, run_id)
        return run_id

    def _make_keyed(self, item: batches.ItemRow, key: str, context: Any) -> None:
        ttl = item.idempotency_ttl or idempotency.ttl_seconds(idempotency.DEFAULT_TTL)
        while True:
            claim = self.keys.claim(item.job, key, ttl)
            if claim.run_id is not None:
                if self._failed(claim.run_id):
                    self.keys.clear(item.job, key, claim.run_id)  # a failed run frees its key
                    continue
                self.store.finish(item, claim.run_id)
                return
            try:
                run_id = self._make(item, item.run_id, context)
            except BaseException:
                self.keys.release(item.job, key, claim.token)
                raise
            self.keys.record(item.job, key, claim.token, run_id)
            return

    def _failed(self, run_id: str) -> bool:
        record = self.instance.get_run_record_by_id(run_id)
        if record is None:
            return True
        run = record.dagster_run
        return status_of(
            {
                "status": run.status.value,
                "tags": [{"key": k, "value": v} for k, v in run.tags.items()],
                "startTime": record.start_time,
                "endTime": record.end_time,
            },
            now=time.time(),
        ).is_failure


def start(instance: dg.DagsterInstance, request_context: Callable[[], Any]) -> BatchCreator:
    """Start a creator in this process, in the background."""
    creator = BatchCreator(instance, request_context)
    creator.start()
    return creator


def main(argv: list[str] | None = None) -> None:
    """``python -m offload.runtime.batch_creator -w workspace.yaml``: a creator on its own, for a
    deployment whose webserver is Dagster's own (``dagster-webserver``, not ``offload dev``)."""
    import argparse
    import signal

    from offload.runtime.dagster_internals import workspace_process_context

    parser = argparse.ArgumentParser(prog="python -m offload.runtime.batch_creator", description=main.__doc__)
    parser.add_argument("-w", "--workspace", default="workspace.yaml", help="the workspace file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with (
        dg.DagsterInstance.get() as instance,
        workspace_process_context(instance, args.workspace) as context,
    ):
        creator = start(instance, context.create_request_context)
        stop.wait()
        creator.stop()


if __name__ == "__main__":
    main()
