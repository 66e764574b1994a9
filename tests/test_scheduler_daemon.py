"""A schedule fires under the real scheduler daemon: ``dagster-daemon run`` on a temporary instance, with the
``weekly_cleanup`` schedule (on by default, so nobody starts it) at a cron of every minute. Within its
window after the next minute starts, the daemon launches one run of the real ``cleanup`` job, which
succeeds; the run carries the tick as its payload and tags (a whole minute, and the minute before)."""

import datetime as dt

import dagster as dg

from benchmarks.support import services
from benchmarks.support.waiting import wait_for
from offload.scheduling import LAST_TIMESTAMP_TAG, TIMESTAMP_TAG
from tests.test_cli import ROOT, cli_env

WINDOW = dt.timedelta(seconds=45)  # from the tick to the run's creation, on a busy machine


def scheduled_runs(instance: dg.DagsterInstance) -> list[dg.RunRecord]:
    return list(
        instance.get_run_records(filters=dg.RunsFilter(tags={"dagster/schedule_name": "weekly_cleanup"}))
    )


def test_the_daemon_fires_a_schedule_within_its_window(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = cli_env(tmp_path)
    started = dt.datetime.now(dt.UTC)

    definitions = ROOT / "tests/support/daemon_defs.py"
    daemon = services.daemon(env, tmp_path / "daemon.log", definitions=definitions).start()
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:

            def finished_run():
                assert daemon.process is not None and daemon.process.poll() is None, daemon.tail()
                runs = scheduled_runs(instance)
                return runs[0] if runs and runs[0].dagster_run.is_finished else None

            # The daemon fires at the first minute boundary after it has seen the schedule: at most ~2 min.
            finished = wait_for(finished_run, 150, "the scheduled run to finish", 0.5, daemon.tail)
    finally:
        daemon.stop()

    run = finished.dagster_run
    assert run.status == dg.DagsterRunStatus.SUCCESS, (tmp_path / "daemon.log").read_text()[-3000:]
    assert run.job_name == "cleanup"
    tick = dt.datetime.fromisoformat(run.tags[TIMESTAMP_TAG])
    assert tick.second == 0 and tick.microsecond == 0 and tick > started
    assert dt.datetime.fromisoformat(run.tags[LAST_TIMESTAMP_TAG]) == tick - dt.timedelta(minutes=1)
    assert tick <= finished.create_timestamp <= tick + WINDOW
    assert run.run_config["timestamp"] == run.tags[TIMESTAMP_TAG]  # the payload is the tick
    # Dagster's own record of the tick agrees (an ISO time in its hidden tag).
    assert dt.datetime.fromisoformat(run.tags[".dagster/scheduled_execution_time"]) == tick
