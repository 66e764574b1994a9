"""Durable waits: a step that waits ends its run, and the run resumes when the wait is over.

**The wait is a step boundary.** ``offload.wait.sleep/until/for_token/for_runs`` inside a step records the
wait (``offload_waits``, offload/runtime/waitstore.py), tags the run ``offload/suspended`` and fails the
step with :class:`Suspended` (no step retry). The run worker finishes the steps that do not depend on the
waiting one and exits: the run holds no process and no concurrency slot. The attempt ends as a Dagster
FAILURE that is neither alerted (sensors/failure_alerts.py skips it) nor retried (:func:`should_retry`,
used by ``OffloadInstance``).

**The resumer** runs in the Dagster daemon (:func:`install` wraps the run queue daemon's iteration,
which hands it the daemon's workspace; it starts with the daemon), as two threads that each pass every
``POLL_SECONDS``: one creates successors (step 1, slow: an execution plan each), the other hands back the
runs whose wait is over (step 2), so a burst of runs reaching their waits never delays a due one:

1. a suspended attempt that has ended gets its successor at once: Dagster's re-execution from failure
   (``create_reexecuted_run``, as run retries make it), created NOT_STARTED and tagged ``offload/resumes``.
   Until the wait is over it is the run's latest attempt: the client shows it ``WAITING``
   (offload/client/runs.py)
   and cancels it by marking it canceled (then it never resumes);
2. when the sleep is due, the token completed or timed out, or every child run is final, the wait's result
   is stored and the successor is submitted to the run coordinator: it queues under every concurrency
   limit like any new run.

**What runs again on resume.** The successor re-executes from failure: every step that finished keeps its
stored output and is not run; the waiting step starts again from its top, and each wait it already passed
returns its stored result at once (waits are keyed by run family, step key and their order within the
step). So code before a wait inside the same step runs again: put side effects in an earlier step (or
make them idempotent), and call the wait first in its own step when the work before it must not repeat.

The successor raises the run's ``dagster/max_retries`` by one, since Dagster counts every run of the family
as a retry. A daemon that stops loses nothing: the state is in the instance's database, and a wait that
came due meanwhile resumes on the resumer's first pass after start-up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.execution.plan.resume_retry import ReexecutionStrategy
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter
from dagster._core.storage.tags import MAX_RETRIES_TAG, PARENT_RUN_ID_TAG, ROOT_RUN_ID_TAG, WILL_RETRY_TAG
from dagster._core.workspace.context import BaseWorkspaceRequestContext, IWorkspaceProcessContext
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from offload.log import redact
from offload.runtime import waitstore
from offload.runtime.waitstore import CANCELED, RESUMED, RESUMING, SUSPENDING, WAITING, WaitRow

log = logging.getLogger("offload.waits")

SUSPENDED_TAG = "offload/suspended"  # on the attempt that ended at a wait: what it waits for
RESUMES_TAG = "offload/resumes"  # on the NOT_STARTED attempt that resumes it
POLL_SECONDS = 0.25
CHILDREN_SECONDS = 1.0  # how often waits for child runs look at their children (two reads per child)
SWEEP_SECONDS = 5.0  # how often waits whose run was canceled are closed (and their child runs canceled)
PARK_WORKERS = 4  # successors created at once (each asks the code server for an execution plan)
START_AT_ONCE = 4  # resumed runs per pass that may start in the daemon's process; the rest are queued
RETRY_DECISION_GRACE = (
    30.0  # as offload/client/runs.py: a failed child without will_retry is final after this
)


class Suspended(dg.Failure):
    """Ends the step at a wait; the run resumes when the wait is over (never retried as a failure)."""

    def __init__(self, description: str):
        super().__init__(description=f"waiting ({description}): the run resumes then", allow_retries=False)


# -- the step's side ---------------------------------------------------------------------------------------

_indexes: dict[tuple[str, str, int], int] = {}
_indexes_lock = threading.Lock()


def step_key(context: Any) -> str:
    op_context = getattr(context, "op_execution_context", context)
    return str(op_context.get_step_execution_context().step.key)


def family_of(context: Any) -> str:
    run = context.run
    return str(run.root_run_id or run.run_id)


def next_wait_id(context: Any) -> str:
    """The id of the next wait (or token) this step reaches: the same on every re-entry of deterministic
    code, whatever attempt runs it."""
    op_context = getattr(context, "op_execution_context", context)
    key = step_key(context)
    counter = (context.run_id, key, int(op_context.retry_number))
    with _indexes_lock:
        index = _indexes.get(counter, 0)
        _indexes[counter] = index + 1
    return f"{family_of(context)}/{key}/{index}"


def passed(context: Any, wait_id: str) -> tuple[bool, Any]:
    """Whether the wait was over on an earlier attempt, and its stored result."""
    row = waitstore.for_instance(context.instance).get_wait(wait_id)
    if row is not None and row.state in (RESUMING, RESUMED):
        return True, row.result
    return False, None


def suspend(
    context: Any,
    wait_id: str,
    kind: str,
    description: str,
    *,
    due_at: float | None = None,
    token_id: str | None = None,
    child_runs: Sequence[str] | None = None,
) -> None:
    """Record the wait, mark the run suspended and end the step (raises :class:`Suspended`)."""
    store = waitstore.for_instance(context.instance)
    store.record_wait(
        wait_id, family=family_of(context), run_id=context.run_id, step_key=step_key(context), kind=kind,
        due_at=due_at, token_id=token_id, child_runs=child_runs,
    )  # fmt: skip
    context.instance.add_run_tags(context.run_id, {SUSPENDED_TAG: description})
    context.log.info(f"waiting ({description}): this run's worker exits; the run resumes then")
    raise Suspended(description)


def until_text(due_at: float) -> str:
    return "until " + datetime.fromtimestamp(due_at, tz=UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z"
    )


# -- run status helpers ------------------------------------------------------------------------------------


def is_suspended(run: dg.DagsterRun) -> bool:
    return bool(run.tags.get(SUSPENDED_TAG))


def should_retry(run: dg.DagsterRun) -> bool | None:
    """False for an attempt that ended at a wait (the resumer continues it); None: Dagster decides."""
    return False if is_suspended(run) else None


def latest_attempt(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun | None:
    """The newest run of ``run_id``'s family (retries and resumes), which stands for the whole run."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        return None
    root = run.root_run_id or run.run_id
    records = instance.get_run_records(RunsFilter(tags={ROOT_RUN_ID_TAG: root}))
    if not records:
        return instance.get_run_by_id(root) or run
    return max(records, key=lambda record: record.create_timestamp).dagster_run


def is_final(instance: dg.DagsterInstance, run_id: str, now: float | None = None) -> bool:
    """Whether the run (its family's latest attempt) has ended for good, in offload's terms."""
    run = latest_attempt(instance, run_id)
    if run is None:
        return True
    if run.status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.CANCELED):
        return True
    if run.status != DagsterRunStatus.FAILURE or is_suspended(run):
        return False
    will_retry = run.tags.get(WILL_RETRY_TAG)
    if will_retry is not None:
        return will_retry != "true"
    record = instance.get_run_record_by_id(run.run_id)
    ended = record.end_time if record is not None and record.end_time else 0.0
    return (now or time.time()) - ended >= RETRY_DECISION_GRACE


# -- the resumer -------------------------------------------------------------------------------------------


class Resumer:
    """Moves waits on: suspended attempts get their successor, due waits are submitted (module docstring).

    Two loops, each in its own thread (:func:`start_resumer`): :meth:`hand_back` submits the runs whose
    wait is over, every ``POLL_SECONDS``; :meth:`upkeep` does the slow work, creating successors (an
    execution plan from the code server each) and closing canceled waits, so that a burst of runs
    reaching their waits never delays a wait that is due.
    """

    def __init__(self, context: IWorkspaceProcessContext):
        self.context = context
        self.instance = context.instance
        self.store = waitstore.for_instance(self.instance)
        self.park_pool = ThreadPoolExecutor(max_workers=PARK_WORKERS, thread_name_prefix="offload-park")
        self.submit_pool = ThreadPoolExecutor(max_workers=START_AT_ONCE, thread_name_prefix="offload-resume")
        self.swept = 0.0
        self.children_checked = 0.0

    def run_forever(self, stop: threading.Event, step: Callable[[float], None]) -> None:
        while not stop.is_set():
            try:
                step(time.time())
            except Exception as error:  # a database hiccup: the next pass tries again
                log.warning("waits: %s", redact(str(error)))
            stop.wait(POLL_SECONDS)

    def tick(self, now: float | None = None) -> None:
        """Both loops' work once, one after the other."""
        now = time.time() if now is None else now
        self.upkeep(now)
        self.hand_back(now)

    def upkeep(self, now: float) -> None:
        """Give each ended suspended attempt its successor; close the waits of canceled runs."""
        by_run: dict[str, list[WaitRow]] = {}
        for row in self.store.waits_in(SUSPENDING):
            by_run.setdefault(row.run_id, []).append(row)  # steps of one run waiting at once: one successor
        if by_run:
            list(self.park_pool.map(self._park, by_run.values()))
        if now - self.swept >= SWEEP_SECONDS:
            self.swept = now
            self._sweep()

    def hand_back(self, now: float) -> None:
        """Store the result of every wait that is over and submit the runs that resume them."""
        self.store.expire_tokens(now)
        over: list[tuple[WaitRow, Any]] = []
        timeout = {"ok": False, "timed_out": True}
        over += [(row, timeout if row.kind == "token" else None) for row in self.store.due_waits(now)]
        for row, token in self.store.resolved_token_waits():
            completed = token.state == waitstore.TOKEN_COMPLETED
            over.append((row, {"ok": completed, "timed_out": not completed, "data": token.data}))
        if now - self.children_checked >= CHILDREN_SECONDS:
            self.children_checked = now
            for row in self.store.waits_in(WAITING, kind="runs"):
                if all(is_final(self.instance, child, now) for child in row.child_runs):
                    over.append((row, None))
        if over:
            successors = self._successors([row for row, _ in over])
            for row, result in over:
                self._resume(row, result, successors.get(row.successor_id or ""))
        resuming = self.store.waits_in(RESUMING)
        if resuming:
            # The first few start at once where there is room (the coordinator's shortcut, a fork each);
            # the rest go straight to the run queue (one event each), which the daemon starts within 1 s.
            request = self.context.create_request_context()
            successors = self._successors(resuming)

            def submit(index: int, row: WaitRow) -> None:
                queue_only = index >= START_AT_ONCE
                self._submit(row, successors.get(row.successor_id or ""), request, queue_only)

            list(self.submit_pool.map(submit, range(len(resuming)), resuming))

    def _successors(self, rows: Sequence[WaitRow]) -> dict[str, dg.DagsterRun]:
        """The runs that resume ``rows``, read a few hundred at a time (not one query per wait)."""
        ids = sorted({row.successor_id for row in rows if row.successor_id})
        found: dict[str, dg.DagsterRun] = {}
        for start in range(0, len(ids), 200):
            for run in self.instance.get_runs(RunsFilter(run_ids=ids[start : start + 200])):
                found[run.run_id] = run
        return found

    def _sweep(self) -> None:
        """Close the waits of canceled runs; a canceled parent's unfinished children are canceled too."""
        rows = [row for row in self.store.waits_in(WAITING) if row.successor_id]
        canceled: set[str] = set()
        for start in range(0, len(rows), 200):
            ids = [row.successor_id or "" for row in rows[start : start + 200]]
            found = self.instance.get_runs(RunsFilter(run_ids=ids, statuses=[DagsterRunStatus.CANCELED]))
            canceled |= {run.run_id for run in found}
        for row in rows:
            if row.successor_id in canceled and self.store.move(row.id, WAITING, CANCELED):
                for child in row.child_runs:
                    current = latest_attempt(self.instance, child)
                    if current is not None and not current.is_finished:
                        self._cancel(current)

    def _cancel(self, run: dg.DagsterRun) -> None:
        if run.status == DagsterRunStatus.NOT_STARTED:  # a waiting child: never resumes
            self.instance.report_run_canceled(run, message="Its parent was canceled while waiting for it.")
            return
        coordinator = self.instance.run_coordinator
        if coordinator is not None:
            coordinator.cancel_run(run.run_id)

    def _park(self, rows: list[WaitRow]) -> None:
        """Give an ended suspended attempt (``rows``: its waits) its NOT_STARTED successor."""
        run = self.instance.get_run_by_id(rows[0].run_id)
        if run is None or (run.is_finished and run.status != DagsterRunStatus.FAILURE):
            for row in rows:
                self.store.move(row.id, SUSPENDING, CANCELED)  # canceled while it was ending
            return
        if not run.is_finished:
            return  # its worker is still finishing the other steps
        try:
            successor = self._existing_successor(run) or self._create_successor(run, rows[0])
        except Exception as error:
            # The job or its code location is gone: the run stays a failure, shown as such.
            self.instance.report_engine_event(
                f"Could not create the run that resumes this wait: {error}", run
            )
            self.instance.add_run_tags(run.run_id, {SUSPENDED_TAG: ""})
            for row in rows:
                self.store.move(row.id, SUSPENDING, CANCELED)
            return
        for row in rows:
            self.store.move(row.id, SUSPENDING, WAITING, successor_id=successor.run_id)
        self.instance.report_engine_event(
            f"Waiting ({run.tags.get(SUSPENDED_TAG)}): run {successor.run_id} resumes it.", run
        )

    def _existing_successor(self, run: dg.DagsterRun) -> dg.DagsterRun | None:
        """A successor made before a daemon restart cut this pass short."""
        for candidate in self.instance.get_runs(RunsFilter(tags={PARENT_RUN_ID_TAG: run.run_id})):
            if candidate.tags.get(RESUMES_TAG):
                return candidate
        return None

    def _create_successor(self, run: dg.DagsterRun, row: WaitRow) -> dg.DagsterRun:
        origin = run.remote_job_origin
        if origin is None:
            raise RuntimeError("the run has no job origin")
        request = self.context.create_request_context()
        location_name = origin.repository_origin.code_location_origin.location_name
        code_location = request.get_code_location(location_name)
        remote_job = code_location.get_job(
            JobSubsetSelector(
                location_name=location_name,
                repository_name=origin.repository_origin.repository_name,
                job_name=run.job_name,
                op_selection=run.op_selection,
                asset_selection=None if run.asset_selection is None else list(run.asset_selection),
                asset_check_selection=(
                    None if run.asset_check_selection is None else list(run.asset_check_selection)
                ),
            )
        )
        retries = run.tags.get(MAX_RETRIES_TAG)
        base = int(retries) if retries and retries.isdigit() else self.instance.run_retries_max_retries
        return self.instance.create_reexecuted_run(
            request_context=request,
            parent_run=run,
            code_location=code_location,
            remote_job=remote_job,
            strategy=ReexecutionStrategy.FROM_FAILURE,
            extra_tags={
                SUSPENDED_TAG: "",
                RESUMES_TAG: run.tags.get(SUSPENDED_TAG) or row.kind,
                MAX_RETRIES_TAG: str(base + 1),  # this resume is not one of the run's retries
            },
            use_parent_run_tags=True,
        )

    def _resume(self, row: WaitRow, result: Any, successor: dg.DagsterRun | None) -> None:
        """The wait is over: store its result for the step; :meth:`hand_back` submits the run."""
        if successor is None or successor.status != DagsterRunStatus.NOT_STARTED:
            state = (
                CANCELED if successor is None or successor.status == DagsterRunStatus.CANCELED else RESUMED
            )
            self.store.move(row.id, WAITING, state)
            return
        self.store.move(row.id, WAITING, RESUMING, result=result)

    def _submit(
        self,
        row: WaitRow,
        successor: dg.DagsterRun | None,
        request: BaseWorkspaceRequestContext,
        queue_only: bool,
    ) -> None:
        """Hand the run that resumes ``row`` to the run coordinator (concurrency limits apply)."""
        if successor is not None and successor.status == DagsterRunStatus.NOT_STARTED:
            coordinator = self.instance.run_coordinator
            if queue_only and isinstance(coordinator, QueuedRunCoordinator):
                QueuedRunCoordinator.submit_run(coordinator, SubmitRunContext(successor, request))
            else:
                self.instance.submit_run(successor.run_id, request)
            self.store.move(row.id, RESUMING, RESUMED, resumed_at=time.time())
        else:
            canceled = successor is None or successor.status == DagsterRunStatus.CANCELED
            self.store.move(row.id, RESUMING, CANCELED if canceled else RESUMED)


_resumer: dict[str, Any] = {}
_resumer_lock = threading.Lock()


def start_resumer(context: IWorkspaceProcessContext) -> None:
    """Start this process's resumer threads (:class:`Resumer`), once (again if one died)."""
    with _resumer_lock:
        threads = _resumer.get("threads") or []
        if threads and all(thread.is_alive() for thread in threads):
            return
        if "stop" in _resumer:
            _resumer["stop"].set()  # the survivor of a pair ends; a new pair starts
        stop = threading.Event()
        resumer = Resumer(context)
        threads = [
            threading.Thread(target=resumer.run_forever, args=(stop, step), name=name, daemon=True)
            for name, step in (
                ("offload-resumer", resumer.hand_back),
                ("offload-waits-upkeep", resumer.upkeep),
            )
        ]
        _resumer.update(threads=threads, stop=stop)
        for thread in threads:
            thread.start()


_installed: list[Callable[..., Iterator[Any]]] = []


def install() -> None:
    """Start the resumer with the daemon's run queue loop (the one daemon every offload deployment runs)."""
    if _installed:
        return
    original = QueuedRunCoordinatorDaemon.run_iteration
    _installed.append(original)

    def run_iteration(self: Any, workspace_process_context: Any, fixed_iteration_time: Any = None) -> Any:
        start_resumer(workspace_process_context)
        yield from original(self, workspace_process_context, fixed_iteration_time)

    QueuedRunCoordinatorDaemon.run_iteration = run_iteration  # type: ignore[method-assign]
