"""offload/runtime/reexecution.py, the two run-retry fixes of offload's instance class.

* A run whose process is killed in the first of three mapped steps: Dagster's own from-failure selection
  drops the two mapped steps that never started (dagster issue #30248); offload's adds them back, and the
  re-execution from failure computes the same total as an uninterrupted run, re-using fan_out's output.
* A RUN_FAILURE event: Dagster makes it visible while the run is still STARTED (the retry daemon then
  skips the run, dagster issue #33741); with offload's instance the run is already failed when it is stored.
Each upstream bug is checked to still be there: when such a check fails, drop the fix.
"""

import os
import signal
import subprocess
import sys

import dagster as dg
import pytest
from dagster._core.execution.plan.state import KnownExecutionState

from benchmarks.support.dagster_deployment import step_log
from benchmarks.support.waiting import wait_for
from offload.runtime import instance as offload_instance
from offload.runtime import reexecution
from tests.crash_location import mapped_steps_job

CHILD = """
import sys
import dagster as dg
from tests.crash_location import mapped_steps_job
with dg.DagsterInstance.from_config(sys.argv[1]) as instance:
    dg.execute_job(dg.reconstructable(mapped_steps_job), instance, run_config={
        "resources": {"scratch": {"config": {"root": sys.argv[2]}}},
        "ops": {"work": {"config": {"block_key": "a"}}},
    })
"""


def test_from_failure_keeps_mapped_steps_that_never_started(tmp_path):
    home, scratch = tmp_path / "home", tmp_path / "scratch"
    home.mkdir()
    scratch.mkdir()
    offload_instance.ensure_config(home)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(home), str(scratch)], cwd=offload_instance.paths.PROJECT_ROOT,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: step_log(scratch)[-1:] == ["work[a]"], 60, "work[a] to start")
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance, reexecution.OffloadInstance)
        [run] = instance.get_runs()
        instance.report_run_failed(run)
        run = instance.get_run_by_id(run.run_id)

        dagsters, _ = reexecution._dagsters_selection(instance, run)
        assert sorted(dagsters) == ["total", "work[a]"]  # the upstream bug this module works around
        ours, _ = KnownExecutionState.build_resume_retry_reexecution(instance, run)
        assert sorted(ours) == ["total", "work[a]", "work[b]", "work[c]"]

        (scratch / "gate").touch()
        with dg.execute_job(
            dg.reconstructable(mapped_steps_job),
            instance,
            reexecution_options=dg.ReexecutionOptions.from_failure(run.run_id, instance),
        ) as result:
            assert result.success
            assert result.output_for_node("total") == 2 + 20 + 200
    assert step_log(scratch) == ["fan_out", "work[a]", "work[a]", "work[b]", "work[c]", "total"]


def test_nothing_is_added_when_every_mapped_step_left_events(tmp_path):
    offload_instance.ensure_config(tmp_path)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        result = dg.execute_job(
            dg.reconstructable(mapped_steps_job),
            instance,
            run_config={"resources": {"scratch": {"config": {"root": str(tmp_path)}}}},
        )
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        assert reexecution.unstarted_mapped_steps(instance, run, []) == []


@pytest.mark.parametrize("offloads", [True, False], ids=["offload-instance", "dagster-instance"])
def test_a_run_is_failed_before_its_failure_event_is_visible(tmp_path, offloads):
    settings = offload_instance.embedded_config()
    if not offloads:
        del settings["instance_class"]
    (tmp_path / "dagster.yaml").write_text(offload_instance.render(settings))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance, reexecution.OffloadInstance) is offloads
        run = instance.add_run(dg.DagsterRun(job_name="job", status=dg.DagsterRunStatus.STARTED))
        storage = instance.event_log_storage
        seen_when_stored = []
        store_event = storage.store_event

        def spy(event):  # what the retry daemon would read the moment the event is visible
            if event.dagster_event and event.dagster_event.is_run_failure:
                seen_when_stored.append(instance.get_run_by_id(run.run_id).status)
            store_event(event)

        storage.store_event = spy
        instance.report_run_failed(run, "worker gone")
        expected = (
            dg.DagsterRunStatus.FAILURE if offloads else dg.DagsterRunStatus.STARTED
        )  # the upstream race
        assert seen_when_stored == [expected]
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
