"""Creating runs in-process through Dagster's instance API, for the webhook gateway and the batch creator.

This is what ``dagster job launch`` does: no webserver, and the caller chooses the run id (the gateway
derives it from the event, the batch creator from the batch and the item's index), so a run storage
refuses a second run for the same event or item whatever the retries and races.

Where a run's creation time goes (measured in a process holding a loaded workspace, SQLite storage, on the
2-core machine under a load average of 13; medians): the job from the workspace snapshot, 0 ms; the
execution plan from the code server (one gRPC call), ~10 ms; the run row and its snapshots, ~40 ms; the
first event of the run (queued or starting), 550 ms, almost all of it the creation of the run's own SQLite
event log file, which ``offload/runtime/event_log_files.py`` brings to ~0.14 s. So the plan call is not worth
caching (it also runs the job's payload rules, which a cached plan would skip); the first event was.

``RunFactory`` resolves a job name to its code location once and keeps it; ``check_config`` gives the
lines of a run config the job refuses (its config schema, from the snapshot the workspace holds, then the
payload rules the code server applies while building the plan) without creating anything.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg
from dagster._config import validate_config_from_snap
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.errors import DagsterUserCodeProcessError

from offload.errors import PayloadError
from offload.log import redact
from offload.payload import config_error_line


class JobNotFound(LookupError):
    """The job is in no code location of the workspace."""


def _payload_lines(error: BaseException) -> list[str] | None:
    """The lines of a ``PayloadError`` the job's payload mapping raised in the code server, if that is it."""
    infos = getattr(error, "user_code_process_error_infos", None) or []
    for info in infos:
        chain = [info]
        while chain[-1].cause is not None:
            chain.append(chain[-1].cause)
        for item in chain:
            if item.cls_name == "PayloadError":
                text = item.message.split("PayloadError: ", 1)[-1]
                return [line for line in text.splitlines() if line.strip()]
    return None


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return redact(f"{type(error).__name__}: {text[0] if text else ''}")


class RunFactory:
    """Creates and submits runs of the jobs of one workspace (``request_context()`` gives a fresh
    request context of it: Dagster's ``WorkspaceProcessContext.create_request_context``)."""

    def __init__(self, instance: dg.DagsterInstance, request_context: Callable[[], Any]):
        self.instance = instance
        self._request_context = request_context
        self._lock = threading.Lock()
        self._locations: dict[str, tuple[str, str]] = {}  # job -> (location, repository)

    def _find(self, context: Any, job_name: str) -> tuple[Any, Any, Any]:
        """(code location, repository, remote job) of ``job_name``."""
        with self._lock:
            known = self._locations.get(job_name)
        for location in context.code_locations:
            if known is not None and location.name != known[0]:
                continue
            for repository in location.get_repositories().values():
                if not repository.has_job(job_name):
                    continue
                with self._lock:
                    self._locations[job_name] = (location.name, repository.name)
                selector = JobSubsetSelector(
                    location_name=location.name, repository_name=repository.name, job_name=job_name,
                    op_selection=None,
                )  # fmt: skip
                return location, repository, location.get_job(selector)
        if known is not None:  # the code location was reloaded without it: look everywhere once more
            with self._lock:
                self._locations.pop(job_name, None)
            return self._find(context, job_name)
        raise JobNotFound(f"job {job_name!r} is not in any code location of the workspace")

    def create(
        self, job_name: str, config: Mapping[str, Any], tags: Mapping[str, str], run_id: str,
        *, context: Any = None,
    ) -> str:  # fmt: skip
        """Create the run of ``job_name`` with ``run_id`` and submit it to the instance's run coordinator
        (the queue, by default); returns the run id. Raises ``DagsterRunAlreadyExists`` if ``run_id``
        exists, ``PayloadError`` (nothing created) if the job refuses ``config``."""
        context = context if context is not None else self._request_context()
        location, repository, job = self._find(context, job_name)
        plan = self._plan(location, job, config)
        run = self.instance.create_run(
            job_name=job_name, run_id=run_id, run_config=dict(config), resolved_op_selection=None,
            step_keys_to_execute=None, op_selection=None, status=None, root_run_id=None,
            parent_run_id=None, tags={**job.tags, **tags}, job_snapshot=job.job_snapshot,
            execution_plan_snapshot=plan.execution_plan_snapshot,
            parent_job_snapshot=job.parent_job_snapshot, remote_job_origin=job.get_remote_origin(),
            job_code_origin=job.get_python_origin(), asset_selection=None, asset_check_selection=None,
            asset_graph=repository.asset_graph,
        )  # fmt: skip
        self.submit(run.run_id, context)
        return run.run_id

    def _plan(self, location: Any, job: Any, config: Mapping[str, Any]) -> Any:
        """The execution plan, after the config is checked against the job's schema (as the webserver's
        ``launchRun`` does); a refused config raises ``PayloadError`` with one line per problem."""
        validated = validate_config_from_snap(job.config_schema_snapshot, job.root_config_key, dict(config))
        if not validated.success:
            raise PayloadError([config_error_line(error.message) for error in validated.errors or []])
        try:
            return location.get_execution_plan(
                job, dict(config), step_keys_to_execute=None, known_state=None, instance=self.instance
            )
        except DagsterUserCodeProcessError as error:
            lines = _payload_lines(error)
            if lines is not None:
                raise PayloadError(lines) from None
            raise

    def submit(self, run_id: str, context: Any = None) -> None:
        """Submit a created run; one that cannot be is failed (never left NOT_STARTED, where nothing
        would pick it up)."""
        context = context if context is not None else self._request_context()
        try:
            self.instance.submit_run(run_id, context)
        except Exception as error:
            run = self.instance.get_run_by_id(run_id)
            if run is not None and run.status == dg.DagsterRunStatus.NOT_STARTED:
                self.instance.report_run_failed(run, f"offload: could not submit the run: {one_line(error)}")
            raise

    def submit_if_not_started(self, run_id: str, context: Any = None) -> None:
        """Queue a run that was created but never submitted (its creator died between the two calls)."""
        run = self.instance.get_run_by_id(run_id)
        if run is not None and run.status == dg.DagsterRunStatus.NOT_STARTED:
            self.submit(run_id, context)
