"""The run coordinator offload configures: Dagster's run queue, except that a run that would not have to
wait starts at once.

With Dagster's ``QueuedRunCoordinator`` every run waits in the queue until the daemon's next look (every
``dequeue_interval_seconds``, at best every second: Dagster's daemon loop sleeps in half-second steps),
even when nothing else is queued or running: most of a short run's trigger-to-start time. Dagster's
``DefaultRunCoordinator`` starts runs at once but has no queue and no limits. :class:`OffloadRunCoordinator`
keeps the queue and every limit and adds one shortcut, taken in the process that submits the run (the
webserver for the client and the UI, the gateway for webhooks, the daemon for sensors and retries):

* **Nothing waits, and the run is under every limit** -> it starts now, in this process, as the daemon
  would start it (``RUN_STARTING``, then the run launcher).
* **Anything else** -> it is queued as Dagster queues it, for the daemon: a run never overtakes one that
  is waiting, and the daemon's rules (priority, pools, code-server back-off) apply to every queued run.

**Limits hold against concurrent starts.** The daemon, and other processes taking the shortcut, decide
from the runs they see in progress. So the run is first marked ``STARTING`` (in progress for everyone)
and only then is its room counted, among the runs queued or in progress besides itself: a daemon that read
the runs before the mark saw the run it was about to start as queued, and that run is counted here; one
that read them after counts this run. If the count says no room (a race lost), the run goes to the queue
(``RUN_ENQUEUED`` after ``RUN_STARTING`` in its log); two runs racing for one slot may both be queued,
never both started. Limits are counted with Dagster's own ``TagConcurrencyLimitsCounter`` with offload's
run-time queue limits laid over it (offload/runtime/queues.py), as the daemon counts them.

**The launcher must be ready.** A launcher that forks workers from a preloaded server (offload's) says
whether its server is up: a cold one would hold the request for the seconds of its preload, so the run
is queued instead and the server starts in the background for the next one. With op concurrency pools
set on the instance every run goes through the queue: only the daemon counts pools.

``start_at_once: false`` turns the shortcut off (Dagster's queue exactly).

**Delayed runs are held.** A run tagged ``offload/delay_until`` (``trigger(delay=...)``) is left
``NOT_STARTED``; the daemon queues it when it is due (offload/runtime/delays.py, installed here so that it
is in place in the daemon). A debounced run (``offload/debounce_key``) may instead be folded into the
run already collecting its key, whose id the submit then returns (offload/runtime/debounce.py).

**No secrets in a run.** Every run passes through here (UI, GraphQL, the client, sensors, the gateway),
so here the client's secret rules (``offload.payload.run_secret_problems``) are applied to every run's
config and tags, with this process's secrets known. A run that breaks them is deleted, config and all,
and the submit fails with one line naming the field: nothing is left to show the secret.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Self

import dagster as dg
from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData
from dagster._core.launcher import LaunchRunContext
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext
from dagster._core.storage.dagster_run import ACTIVE_RUN_STATUSES, DagsterRunStatus, RunsFilter
from dagster._core.workspace.context import BaseWorkspaceRequestContext
from dagster._serdes import ConfigurableClassData

from offload.errors import PayloadError
from offload.payload import run_secret_problems
from offload.runtime import debounce, delays, event_log_files, queues, schema_scripts

log = logging.getLogger("offload.runtime.coordinator")


class OffloadRunCoordinator(QueuedRunCoordinator):
    """Dagster's run queue; a run that would not wait in it starts at once (module docstring).

    Configure it in ``dagster.yaml`` (offload's instance files have it)::

        run_coordinator:
          module: offload.runtime.coordinator
          class: OffloadRunCoordinator
          config:
            start_at_once: true      # false: every run waits for the daemon, as with QueuedRunCoordinator
            tag_concurrency_limits: [...]   # and every other QueuedRunCoordinator setting
    """

    def __init__(self, start_at_once: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.start_at_once = start_at_once
        schema_scripts.install()  # each new run's event log file gets a schema check here: without rereading
        delays.install()  # the daemon releases delayed runs and expires runs past their TTL
        queues.install()  # the daemon counts queue limits set at run time
        event_log_files.install()  # ... and is created here: copied from a template, not built anew

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        queued: dict[str, Any] = dict(QueuedRunCoordinator.config_type())  # type: ignore[arg-type]
        return {
            **queued,
            "start_at_once": dg.Field(
                bool,
                is_required=False,
                default_value=True,
                description="Start a run in the process that submits it when no run is queued and it is "
                "under every limit, instead of waiting for the daemon's next look at the queue.",
            ),
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> Self:
        settings = dict(config_value)
        start_at_once = settings.pop("start_at_once", True)
        coordinator = super().from_config_value(inst_data, settings)
        coordinator.start_at_once = start_at_once
        return coordinator

    def submit_run(self, context: SubmitRunContext) -> dg.DagsterRun:
        run = context.dagster_run
        problems = run_secret_problems(run.run_config, run.tags)
        if problems:
            # Deleted, not failed: a failed run would still show its config (the secret) in the UI.
            self._instance.delete_run(run.run_id)
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise PayloadError([f"{problems[0]}{more}"])
        if debounce.key_of(run) is not None and run.status == DagsterRunStatus.NOT_STARTED:
            collector = debounce.collapse(self._instance, run)
            if collector.run_id != run.run_id:
                return collector  # this trigger's run was folded into it (and deleted)
        if delays.is_delayed(run):
            delays.hold(self._instance, run, self.__class__)
            return self._reload(run)
        if self.start_at_once and run.status == DagsterRunStatus.NOT_STARTED:
            started = self._start_at_once(run, context.workspace)
            if started is not None:
                return started
        return super().submit_run(context)

    # -- the shortcut ------------------------------------------------------------------------------------

    def _start_at_once(
        self, run: dg.DagsterRun, workspace: BaseWorkspaceRequestContext
    ) -> dg.DagsterRun | None:
        """Start ``run`` now and return it, or None (nothing written) to queue it."""
        launcher = self._instance.run_launcher
        ready = getattr(launcher, "ready_to_launch", None)
        if ready is not None and not ready(run, workspace):
            return None
        if self._pools_in_use() or not self._has_room(run):
            return None
        starting = DagsterEventType.PIPELINE_STARTING.value
        self._instance.report_dagster_event(
            DagsterEvent(event_type_value=starting, job_name=run.job_name), run_id=run.run_id
        )
        if not self._has_room(run):  # a concurrent start took the slot between the two counts
            self._enqueue(run, "Another run took the last slot as this one started: queued.")
            return self._reload(run)
        current = self._reload(run)
        try:
            launcher.launch_run(LaunchRunContext(dagster_run=current, workspace=workspace))
        except Exception as error:
            # As the daemon does when a launch fails: the queue retries it (and applies the code server
            # back-off), unless the run got further than STARTING before the error.
            if self._reload(run).status == DagsterRunStatus.STARTING:
                self._enqueue(run, f"Starting at once failed ({type(error).__name__}): queued instead.")
            else:
                log.warning("run %s: launch raised after it had started: %s", run.run_id, error)
        return self._reload(run)

    def _pools_in_use(self) -> bool:
        """The daemon holds runs back on op concurrency pools: with any pool set, leave it to the queue."""
        queue = self.get_run_queue_config()
        if not queue.should_block_op_concurrency_limited_runs:
            return False
        pools = self._instance.get_concurrency_config().pool_config
        if pools.default_pool_limit is not None:
            return True
        keys = self._instance.event_log_storage.get_concurrency_keys()
        return any(not queues.is_queue_pool(key) for key in keys)  # offload's queue limits are not op pools

    def _has_room(self, run: dg.DagsterRun) -> bool:
        """No other run is queued, and ``run`` fits every limit among the other runs in progress."""
        queue = self.get_run_queue_config()
        others = self._instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.QUEUED]), limit=2)
        if any(other.run_id != run.run_id for other in others):
            return False
        in_progress = [
            other
            for other in self._instance.get_runs(RunsFilter(statuses=ACTIVE_RUN_STATUSES))
            if other.run_id != run.run_id
        ]
        if queue.max_concurrent_runs != -1 and len(in_progress) >= queue.max_concurrent_runs:
            return False
        limits = queues.read_limits(self._instance)  # set at run time (offload/runtime/queues.py)
        counter = queues.QueueLimitsCounter(list(queue.tag_concurrency_limits), in_progress, limits)
        return not counter.is_blocked(run)

    def _enqueue(self, run: dg.DagsterRun, reason: str) -> None:
        self._instance.report_engine_event(reason, run, EngineEventData(), cls=self.__class__)
        self._instance.report_dagster_event(DagsterEvent.job_enqueue(run), run_id=run.run_id)

    def _reload(self, run: dg.DagsterRun) -> dg.DagsterRun:
        current = self._instance.get_run_by_id(run.run_id)
        assert current is not None, f"run {run.run_id} vanished while being submitted"
        return current
