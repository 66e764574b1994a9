"""Run retries that are not lost and re-executions from failure that keep every mapped step.

Offload's crash-resume is Dagster's run retries (re-execute from failure). Two Dagster bugs break it, and
:class:`OffloadInstance` (``instance_class`` in ``deploy/instance-common.yaml``, so it is in place in every
process that opens the instance: daemon, webserver, code server, run workers, CLI) fixes both:

* **Mapped steps that never started are dropped** (dagster issue #30248). Dagster chooses what a
  from-failure re-execution runs (``KnownExecutionState.build_resume_retry_reexecution``,
  ``dagster/_core/execution/plan/state.py``) from the failed run's step events. For a mapped step
  (``.map()`` over a ``DynamicOut``) it looks at the instances that left events and forgets the ones that
  never started: a run whose worker died in ``transcode[mp4]`` before ``transcode[webm]`` began is retried
  with ``transcode[mp4]``, ``upload`` and ``notify`` only, and "succeeds" without the WebM. With the
  in-process executor (steps one after another) that is the common case of a crash.
  :func:`build_resume_retry_reexecution` is Dagster's selection plus those instances: every mapping key the
  dynamic output produced (known from the failed run and its ancestors) whose mapped step has no event in
  the failed run and was in its scope. It serves automatic retries, the UI's Re-execute from failure and
  ``ReexecutionOptions.from_failure`` alike.
* **A retry is skipped for good when the retry daemon reads at the wrong moment** (dagster issue #33741).
  Dagster stores a RUN_FAILURE event, then marks the run failed; the retry daemon, reading in between,
  sees the new event of a run still STARTED, decides not to retry and moves past it. The daemon's own run
  monitor writing the failure while the retry daemon reads (both run first thing after a restart) made it
  miss about one crash in ten. :meth:`OffloadInstance.handle_new_event` marks the run failed first.

The same instance also keeps a finished run's status final (``offload/runtime/run_status.py``: a max-runtime
stop
racing the worker's success could flip a finished run to FAILURE) and lets the daemon's run monitor find a
worker that died while its run was STARTING (``offload/runtime/monitoring.py``).

Remove a fix when upstream has one: tests/test_reexecution.py checks that each bug is still there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from dagster._core.events import DagsterEventBatchMetadata, DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.execution.plan.handle import StepHandle, UnresolvedStepHandle
from dagster._core.execution.plan.inputs import FromPendingDynamicStepOutput, FromUnresolvedStepOutput
from dagster._core.execution.plan.state import KnownExecutionState
from dagster._core.execution.plan.step import StepKind
from dagster._core.instance.ref import InstanceRef
from dagster._core.snap.execution_plan_snapshot import ExecutionStepSnap
from dagster._time import datetime_from_timestamp

from offload.runtime import monitoring, run_status, schema_scripts, sqlite_engines, waits

_dagsters_selection = KnownExecutionState.build_resume_retry_reexecution
_STEP_EVENTS = {
    DagsterEventType.STEP_START,
    DagsterEventType.STEP_SUCCESS,
    DagsterEventType.STEP_FAILURE,
    DagsterEventType.STEP_SKIPPED,
    DagsterEventType.STEP_OUTPUT,
}


def build_resume_retry_reexecution(
    instance: dg.DagsterInstance, parent_run: dg.DagsterRun
) -> tuple[Sequence[str], KnownExecutionState]:
    """Dagster's from-failure step selection, plus the mapped steps that never started."""
    steps, known_state = _dagsters_selection(instance, parent_run)
    missing = unstarted_mapped_steps(instance, parent_run, steps)
    if not missing:
        return steps, known_state
    selection = [*steps, *missing]
    return selection, known_state.update_for_step_selection(selection)


def unstarted_mapped_steps(
    instance: dg.DagsterInstance, parent_run: dg.DagsterRun, selected: Sequence[str]
) -> list[str]:
    """Resolved mapped steps (``transcode[webm]``) the failed run should have run but never started."""
    snapshot_id = parent_run.execution_plan_snapshot_id
    snapshot = instance.get_execution_plan_snapshot(snapshot_id) if snapshot_id else None
    if snapshot is None:
        return []
    mappings = KnownExecutionState.build_for_reexecution(instance, parent_run).dynamic_mappings
    seen = {entry.step_key for entry in instance.all_logs(parent_run.run_id, of_type=_STEP_EVENTS)}
    scope = set(parent_run.step_keys_to_execute or ())
    missing = []
    for step in snapshot.steps:
        source = _dynamic_source(step) if step.kind == StepKind.UNRESOLVED_MAPPED else None
        if source is None:
            continue
        handle = StepHandle.parse_from_key(step.key)
        assert isinstance(handle, UnresolvedStepHandle)
        for mapping_key in mappings.get(source[0], {}).get(source[1]) or []:
            key = handle.resolve(mapping_key).to_key()
            in_scope = not scope or key in scope or step.key in scope  # else an earlier run did it
            if in_scope and key not in seen and key not in selected:
                missing.append(key)
    return missing


def _dynamic_source(step: ExecutionStepSnap) -> tuple[str, str] | None:
    """The (step key, output name) of the dynamic output a mapped step is resolved by."""
    for step_input in step.inputs:
        source = step_input.source
        if isinstance(source, FromPendingDynamicStepOutput):
            return source.step_output_handle.step_key, source.step_output_handle.output_name
        if isinstance(source, FromUnresolvedStepOutput):
            pending = source.unresolved_step_output_handle
            return pending.resolved_by_step_key, pending.resolved_by_output_name
    return None


def install() -> None:
    """Make every from-failure re-execution in this process use :func:`build_resume_retry_reexecution`."""
    KnownExecutionState.build_resume_retry_reexecution = staticmethod(build_resume_retry_reexecution)  # type: ignore[method-assign]


class OffloadInstance(dg.DagsterInstance):
    """Dagster's instance with the two run-retry fixes of this module, final run statuses
    (``offload/runtime/run_status.py``) and the STARTING-run check (``offload/runtime/monitoring.py``) in
    place.

    Configured as ``instance_class``. It takes no settings of its own; the two class methods are what
    Dagster asks a custom instance class for.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        install()
        monitoring.install()
        waits.install()  # durable waits: the resumer runs in the daemon (offload/runtime/waits.py)
        sqlite_engines.install()  # SQLite storages keep their engines (offload/runtime/sqlite_engines.py)
        schema_scripts.install()  # schema and column checks done once (offload/runtime/schema_scripts.py)
        super().__init__(*args, **kwargs)
        self._status_storage = run_status.install(self._run_storage)

    def _should_retry_run(self, run: dg.DagsterRun, run_failure_reason: Any) -> bool:
        """An attempt that ended at a durable wait is resumed, not retried."""
        decision = waits.should_retry(run)
        if decision is not None:
            return decision
        return bool(super()._should_retry_run(run, run_failure_reason))

    def handle_new_event(
        self, event: EventLogEntry, *, batch_metadata: DagsterEventBatchMetadata | None = None
    ) -> None:
        """Write a status change before storing its event: a run is marked failed before its RUN_FAILURE
        event becomes visible to the retry daemon, and a change refused because the run has finished
        (``offload/runtime/run_status.py``) is stored as an engine event saying so instead of the status
        event.

        Dagster then stores the event; its repeat of the same status write is skipped.
        """
        dagster_event = event.dagster_event
        if (
            dagster_event is not None
            and dagster_event.is_job_event
            and event.run_id
            and self._status_storage is not None
            and not self.event_log_storage.handles_run_events_in_store_event
        ):
            updated_at = datetime_from_timestamp(event.timestamp)
            final = run_status.handle_run_event(self._status_storage, event.run_id, dagster_event, updated_at)
            if final is not None:
                self.report_engine_event(
                    f"Ignored {dagster_event.event_type_value} ({dagster_event.message or 'no message'}): "
                    f"the run had already finished as {final.value}, and a finished run's status is final.",
                    job_name=event.job_name,
                    run_id=event.run_id,
                )
                return
            with run_status.written(dagster_event):  # Dagster's repeat of the write is skipped
                super().handle_new_event(event, batch_metadata=batch_metadata)
            return
        super().handle_new_event(event, batch_metadata=batch_metadata)

    @classmethod
    def config_schema(cls) -> dict[str, Any]:
        return {}

    @staticmethod
    def config_defaults(base_dir: str) -> Mapping[str, Any]:
        return InstanceRef.config_defaults(base_dir)
