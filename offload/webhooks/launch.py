"""From an inbox row to exactly one run: the claim protocol, and the one function that creates a run.

Two launchers work on the inbox: the gateway, right after it commits an event (the fast path), and the
``webhook_inbox`` sensor, for anything the gateway did not launch (the safety net). Why no event gets two
runs:

1. **One claimer at a time.** A launcher first claims the row with a conditional UPDATE
   (``Inbox.claim``: unlaunched and unclaimed). The database serialises the UPDATEs, so exactly one
   launcher gets ``rowcount == 1``. The sensor leaves fresh rows alone for a grace period, so the gateway
   normally wins. Only the sensor takes over a claim, and only one older than the claim timeout: the
   gateway never does, because a sensor's run is made by the daemon after the tick, possibly many
   seconds after its claim (measured: a tick of 100 requests), and Dagster's run_key already keeps the
   sensor from asking twice.
2. **Look before creating.** The claimer looks for a run tagged ``offload/webhook_event=<key>``; if one
   exists (a launcher died after creating it, before recording it) it records that run and stops.
3. **Run storage refuses a second gateway run.** The gateway creates the run with an id derived from the
   event (``run_id_for``), so even two gateway processes racing past steps 1-2 cannot both create it. The
   sensor asks for its run with ``run_key = <key>``, which Dagster's sensor machinery creates once per key.
4. **Claims are renewed just before the run is made** (``Inbox.still_claimed``): a launcher whose claim
   went stale and was taken over gives up instead of creating.

The one interleaving left is a gateway that renews its claim and then stalls, between that and creating
the run, for longer than the claim timeout (``OFFLOAD_WEBHOOK_CLAIM_TIMEOUT``, 120 s) while the sensor
takes the row over. The run storage would then hold two runs tagged with the same event; the handlers'
writes are idempotent on the event id, so the effect is still once.

``create_run`` is the only place that knows how a run is made (Dagster's instance API against a loaded
workspace); swap it for a GraphQL client without touching the protocol.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dagster as dg

from offload import paths
from offload.log import redact
from offload.runtime.dagster_internals import DagsterRunAlreadyExists, workspace_process_context
from offload.runtime.run_factory import JobNotFound, RunFactory
from offload.trigger_options import first_attempt
from offload.webhooks.event import EVENT_TAG, PROVIDER_TAG, WebhookEvent, event_key, run_id_for, run_tags
from offload.webhooks.inbox import Inbox, InboxRow, now

log = logging.getLogger("offload.webhooks")

DEFAULT_CLAIM_TIMEOUT = 120.0  # seconds a claim holds before the sensor may take the row over
# The sweep for runs a killed gateway created but never submitted: every SWEEP_SECONDS, runs still
# NOT_STARTED ORPHAN_SECONDS after their creation (a live launcher submits within milliseconds of creating).
# An orphan is thus submitted within ~15 s of its creation, or of a restarted gateway's workspace loading,
# well inside Dagster's 180 s start timeout.
SWEEP_SECONDS = 10.0
ORPHAN_SECONDS = 5.0


def existing_run(instance: dg.DagsterInstance, provider: str, event_id: str) -> str | None:
    """The id of a run already made for the event, by any launcher."""
    gateway_run = run_id_for(provider, event_id)
    if instance.has_run(gateway_run):
        return gateway_run
    ids = instance.get_run_ids(dg.RunsFilter(tags={EVENT_TAG: event_key(provider, event_id)}), limit=1)
    return ids[0] if ids else None


def run_config(event: WebhookEvent) -> dict[str, Any]:
    """The run config of a handler job: the event itself (the jobs map it onto their steps)."""
    return event.model_dump()


class Workspace:
    """The code location(s) of ``workspace.yaml``, loaded once in the background (it starts a code server
    process, several seconds); launches wait for it."""

    def __init__(self, instance: dg.DagsterInstance, workspace_file: Path):
        self.instance = instance
        self.workspace_file = workspace_file
        self._ready = threading.Event()
        self._context: Any = None
        self._error: BaseException | None = None
        threading.Thread(target=self._load, name="workspace-loader", daemon=True).start()

    def _load(self) -> None:
        try:
            self._context = workspace_process_context(self.instance, str(self.workspace_file))
        except BaseException as error:
            self._error = error
        finally:
            self._ready.set()

    @property
    def loaded(self) -> bool:
        return self._ready.is_set() and self._error is None

    def request_context(self, timeout: float) -> Any:
        if not self._ready.wait(timeout):
            raise TimeoutError(f"workspace {self.workspace_file} not loaded within {timeout:.0f} s")
        if self._error is not None:
            raise RuntimeError(f"workspace {self.workspace_file}: {self._error}")
        return self._context.create_request_context()

    def close(self) -> None:
        if self._ready.is_set() and self._context is not None:
            self._context.__exit__(None, None, None)


def create_run(
    instance: dg.DagsterInstance, request_context: Any, job_name: str, config: Mapping[str, Any],
    tags: Mapping[str, str], run_id: str,
) -> str:  # fmt: skip
    """Create the run of ``job_name`` with ``run_id`` and submit it to the instance's run coordinator (the
    queue, by default); returns the run id. Raises ``DagsterRunAlreadyExists`` if ``run_id`` exists.

    The same run factory as the batches' (offload/runtime/run_factory.py: Dagster's instance API, as
    ``dagster job launch``; where a creation's time goes is measured there): no webserver, and the run id
    it is given.
    """
    factory = RunFactory(instance, lambda: request_context)
    try:
        return factory.create(job_name, config, tags, run_id, context=request_context)
    except JobNotFound as error:
        raise LookupError(str(error)) from None


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return redact(f"{type(error).__name__}: {text[0] if text else ''}")


class GatewayLauncher:
    """The fast path: launches the run of each event the gateway has just committed, a few at a time in
    background threads, so requests never wait for Dagster. Whatever it cannot launch (full queue, a
    failure, a crash) stays ``received`` in the inbox for the sensor."""

    def __init__(
        self,
        inbox: Inbox,
        instance: dg.DagsterInstance,
        job_names: Mapping[str, str],
        workspace_file: Path | None = None,
        claim_timeout: float = DEFAULT_CLAIM_TIMEOUT,
        threads: int = 4,
        max_pending: int = 10_000,
        on_launched: Callable[[InboxRow, str], None] | None = None,
    ):
        self.inbox = inbox
        self.instance = instance
        self.job_names = dict(job_names)
        self.claim_timeout = claim_timeout
        self.workspace = Workspace(instance, workspace_file or paths.PROJECT_ROOT / "workspace.yaml")
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="launch")
        self._pending = threading.BoundedSemaphore(max_pending)
        self._on_launched = on_launched
        self._stop = threading.Event()

    def start_sweep(self) -> None:
        """Run :meth:`sweep` in a background thread until :meth:`close`."""
        threading.Thread(target=self.sweep, args=(self._stop,), name="launch-sweep", daemon=True).start()

    def submit(self, row_id: int) -> bool:
        """Launch the row's run soon; False when too many launches are pending (the sensor will do it)."""
        if not self._pending.acquire(blocking=False):
            return False
        self._pool.submit(self._launch_and_release, row_id)
        return True

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.workspace.close()

    def _submit_if_not_started(self, run_id: str) -> None:
        """Queue a run that was created but never submitted (its launcher died between the two calls)."""
        run = self.instance.get_run_by_id(run_id)
        if run is not None and run.status == dg.DagsterRunStatus.NOT_STARTED:
            self.instance.submit_run(run_id, self.workspace.request_context(timeout=self.claim_timeout / 2))

    def resubmit_orphans(self, older_than: float = ORPHAN_SECONDS) -> list[str]:
        """Submit webhook runs a gateway (this one, another, a previous one) created but did not submit
        (killed between create and submit). Returns their ids."""
        records = self.instance.get_run_records(
            dg.RunsFilter(
                statuses=[dg.DagsterRunStatus.NOT_STARTED],
                tags={PROVIDER_TAG: list(self.job_names)},
                created_before=now() - dt.timedelta(seconds=older_than),
            )
        )
        # Only first attempts: a later one (the run that resumes a wait, NOT_STARTED until the wait is
        # over) carries the webhook's tags too, and is the resumer's to submit.
        orphans = [record.dagster_run.run_id for record in records if first_attempt(record.dagster_run.tags)]
        for run_id in orphans:
            self._submit_if_not_started(run_id)
        return orphans

    def sweep(self, stop: threading.Event, interval: float = SWEEP_SECONDS) -> None:
        """Until ``stop``: once the workspace has loaded, and then every ``interval`` seconds, submit the
        orphans (:meth:`resubmit_orphans`). Periodic, not only at start: a gateway restarted within seconds
        of a kill finds the killed one's run too young to be an orphan yet."""
        try:
            self.workspace.request_context(timeout=600)
        except Exception as error:
            log.warning("launch recovery: %s", redact(str(error)))
            return
        while not stop.is_set():
            try:
                for run_id in self.resubmit_orphans():
                    log.info("submitted run %s that its gateway created but did not submit", run_id)
            except Exception as error:
                log.warning("launch recovery: %s", redact(str(error)))
            stop.wait(interval)

    def _launch_and_release(self, row_id: int) -> None:
        try:
            self.launch(row_id)
        except Exception:
            log.exception("webhook launch of inbox row %s failed", row_id)
        finally:
            self._pending.release()

    def launch(self, row_id: int) -> str | None:
        """Claim the row and make its run; the run id, or None when another launcher holds the row."""
        token = f"gateway-{uuid.uuid4().hex[:20]}"
        if not self.inbox.claim(row_id, token):  # free claims only: a stale one is the sensor's to take
            return None
        row = self.inbox.get(row_id)
        assert row is not None
        try:
            run_id = existing_run(self.instance, row.provider, row.event_id)
            if run_id is None:
                request_context = self.workspace.request_context(timeout=self.claim_timeout / 2)
                if not self.inbox.still_claimed(row_id, token):
                    return None
                run_id = run_id_for(row.provider, row.event_id)
                # DagsterRunAlreadyExists: made by another gateway process a moment ago, the event's one run.
                with contextlib.suppress(DagsterRunAlreadyExists):
                    create_run(
                        self.instance, request_context, self.job_names[row.provider],
                        run_config(row.event()), run_tags(row.provider, row.event_id), run_id,
                    )  # fmt: skip
            else:
                self._submit_if_not_started(run_id)
        except Exception as error:
            self.inbox.release(row_id, token, _one_line(error))
            raise
        self.inbox.record_run(row_id, run_id)
        if self._on_launched is not None:
            self._on_launched(row, run_id)
        return run_id
