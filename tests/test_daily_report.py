"""``daily_report`` materialized for a day of real run history and seeded app data: small jobs really run
(some fail) in a temporary Dagster instance and are moved to that day; the report counts runs per job, success
rates, p50/p95 durations and failures with their errors and links (``OFFLOAD_UI_URL``), and new users,
payments and usage from the app database, leaving out what happened the days around it; the HTML report and
the chart (a PNG that decodes) are stored, the report is emailed to each configured address once, the counts
and the chart are metadata, and the failure-rate check fails over the threshold and passes under it; days
are days in the report's time zone. The percentile helper is checked on its own, and the backfill command
works from the CLI."""

import datetime as dt
import email
import email.policy
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from PIL import Image

from offload.errors import ConfigurationError
from pipelines.reports import build_daily_report
from pipelines.reports.assets import max_failure_rate, recipients
from pipelines.reports.chart import NO_RUNS, chart_figure
from pipelines.reports.metrics import RunSummary, run_metrics
from resources.database import AppDatabase, Payment, UsageItem
from resources.database.schema import users
from resources.email import OutboxEmail
from resources.storage import LocalStorage
from tests.support.runs import set_run_times
from tests.test_cli import BIN, ROOT, cli_env

DAY = "2026-03-07"
UTC = dt.UTC


def on_day(hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, 7, hour, minute, tzinfo=UTC)


@dg.op(config_schema={"fail": bool})
def work(context: dg.OpExecutionContext) -> None:
    if context.op_config["fail"]:
        raise RuntimeError("upstream said no")


@dg.job
def ingest() -> None:
    work()


@dg.job
def export() -> None:
    work()


def run(
    instance: dg.DagsterInstance, job: dg.JobDefinition, fail: bool, created: dt.datetime, seconds: float
) -> str:
    result = job.execute_in_process(
        run_config={"ops": {"work": {"config": {"fail": fail}}}}, instance=instance, raise_on_error=False
    )
    assert result.success is not fail
    set_run_times(instance, result.run_id, created, seconds)
    return result.run_id


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test(temp_dir=str(tmp_path_factory.mktemp("home"))) as test_instance:
        yield test_instance


@pytest.fixture(scope="module")
def history(instance) -> dict[str, str]:
    """Runs on the day (ingest: 10, 20, 30 s ok and a 40 s failure; export: 5 s ok, 15 s failure) and
    one run just before and one just after it."""
    runs = {
        "ingest_1": run(instance, ingest, False, on_day(0, 0), 10),  # exactly midnight: on the day
        "ingest_2": run(instance, ingest, False, on_day(6), 20),
        "ingest_3": run(instance, ingest, False, on_day(12), 30),
        "ingest_failed": run(instance, ingest, True, on_day(13), 40),
        "export_1": run(instance, export, False, on_day(18), 5),
        "export_failed": run(instance, export, True, on_day(23, 59), 15),
        "before": run(instance, export, True, on_day(0) - dt.timedelta(seconds=1), 1),
        "after": run(instance, ingest, True, on_day(0) + dt.timedelta(days=1), 1),
    }
    return runs


@pytest.fixture
def database(tmp_path: Path) -> Iterator[AppDatabase]:
    db = AppDatabase(url=f"sqlite:///{tmp_path / 'app.db'}")
    db.migrate()
    db.ensure_user("u_old", "old@example.com")  # created now, long after the day
    # Users created on the day and the day after: only the first two count.
    for user_id, created in (("u1", on_day(8)), ("u2", on_day(22)), ("u3", on_day(0) + dt.timedelta(days=1))):
        db.record_usage(
            user_id, f"run-{user_id}", "send_email", [UsageItem("emails_sent", 1)], occurred_at=created
        )
    with db.engine().begin() as connection:
        for user_id, created in (
            ("u_old", dt.datetime(2020, 1, 1, tzinfo=UTC)),
            ("u1", on_day(8)),
            ("u2", on_day(22)),
            ("u3", on_day(0) + dt.timedelta(days=1)),
        ):
            connection.execute(sa.update(users).where(users.c.id == user_id).values(created_at=created))
    db.record_usage(
        "u1", "run-video", "video_pipeline", [UsageItem("video_transcoded", 95)], occurred_at=on_day(9)
    )
    for payment_id, amount, status, when in (
        ("pi_1", 1000, "succeeded", on_day(10)),
        ("pi_2", 550, "succeeded", on_day(11)),
        ("pi_3", 700, "failed", on_day(12)),
        ("pi_4", 9999, "succeeded", on_day(0) - dt.timedelta(minutes=1)),  # the day before
    ):
        db.record_payment(Payment(payment_id, "stripe", amount, "usd", status, when, user_id="u1"))
    yield db
    db.engine().dispose()


@pytest.fixture
def report_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("OFFLOAD_UI_URL", "https://dagster.acme.test/")
    monkeypatch.setenv("OFFLOAD_REPORT_EMAILS", "ops@example.com, ceo@example.com")
    monkeypatch.delenv("OFFLOAD_REPORT_MAX_FAILURE_RATE", raising=False)
    return {
        "storage": LocalStorage(root=str(tmp_path / "storage")),
        "email": OutboxEmail(directory=str(tmp_path / "outbox")),
    }


def materialize(instance, database, report_env, day: str = DAY) -> dg.ExecuteInProcessResult:
    asset, _job = build_daily_report("UTC")
    return dg.materialize(
        [asset], partition_key=day, instance=instance, resources={"database": database, **report_env},
        raise_on_error=False,
    )  # fmt: skip


def materialization_metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    [event] = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    return {key: getattr(value, "value", value) for key, value in metadata.items()}


def test_the_report_of_a_day(instance, history, database, report_env, tmp_path):
    result = materialize(instance, database, report_env)

    assert result.success
    metadata = materialization_metadata(result)
    assert {k: metadata[k] for k in ("runs", "runs_succeeded", "runs_failed", "failure_rate")} == {
        "runs": 6, "runs_succeeded": 4, "runs_failed": 2, "failure_rate": round(2 / 6, 4)}  # fmt: skip
    assert {k: metadata[k] for k in ("new_users", "payments", "revenue_usd", "active_users")} == {
        "new_users": 2, "payments": 3, "revenue_usd": 1550, "active_users": 2}  # fmt: skip
    assert metadata["usage_emails_sent"] == 2
    assert metadata["usage_video_transcoded"] == 95
    jobs = metadata["jobs"]
    assert "| ingest | 4 | 3 | 1 | 75.0% | 25.0 | 38.5 |" in jobs  # p95 of 10, 20, 30, 40 s: 38.5 s
    assert "| export | 2 | 1 | 1 | 50.0% | 10.0 | 14.5 |" in jobs
    for name in ("ingest_failed", "export_failed"):
        assert f"https://dagster.acme.test/runs/{history[name]}" in metadata["failures"]
    assert "work: RuntimeError: upstream said no" in metadata["failures"]
    assert history["before"] not in metadata["failures"] and history["after"] not in metadata["failures"]

    # The stored report and chart.
    storage = report_env["storage"]
    html = (tmp_path / "storage" / "reports/daily/2026-03-07.html").read_text()
    assert f'href="https://dagster.acme.test/runs/{history["ingest_failed"]}"' in html
    assert "data:image/png;base64," in html
    assert storage.exists("reports/daily/2026-03-07.png")
    with Image.open(tmp_path / "storage" / "reports/daily/2026-03-07.png") as chart:
        chart.load()  # decodes every pixel
        assert chart.format == "PNG" and chart.size == (1000, 400)
    assert metadata["chart"].startswith("![chart](data:image/png;base64,iVBORw0KGgo")

    # One email per recipient.
    sent = [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in (tmp_path / "outbox").iterdir()
    ]
    assert sorted(str(m["To"]) for m in sent) == ["ceo@example.com", "ops@example.com"]
    assert all(str(m["Subject"]) == "offload daily report 2026-03-07: 6 runs, 33.3% failed" for m in sent)

    # The failure rate is over the default 10%: the check fails, and says why.
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "failure_rate_below_threshold"
    assert not check.passed
    assert check.metadata["threshold"].value == 0.1
    assert check.description == "2 of 6 finished runs failed on 2026-03-07 (33.3% > 10.0%)"


def test_the_check_passes_under_the_threshold_and_a_rerun_replaces_the_report(
    instance, history, database, report_env, monkeypatch, tmp_path
):
    monkeypatch.setenv("OFFLOAD_REPORT_MAX_FAILURE_RATE", "0.5")
    monkeypatch.setenv("OFFLOAD_REPORT_EMAILS", "")

    first, second = materialize(instance, database, report_env), materialize(instance, database, report_env)

    for result in (first, second):
        [check] = result.get_asset_check_evaluations()
        assert check.passed
        # The report's own earlier run is history too, but on today, not on the reported day.
        assert materialization_metadata(result)["runs"] == 6
    assert sorted(report_env["storage"].list_keys("reports/")) == [
        "reports/daily/2026-03-07.html", "reports/daily/2026-03-07.png"]  # fmt: skip
    assert not (tmp_path / "outbox").exists()  # no recipients: stored, not sent


def test_an_empty_day(instance, database, report_env, tmp_path):
    result = materialize(instance, database, report_env, "2026-03-01")

    assert result.success
    metadata = materialization_metadata(result)
    assert (metadata["runs"], metadata["failure_rate"]) == (0, 0.0)
    [check] = result.get_asset_check_evaluations()
    assert check.passed
    with Image.open(tmp_path / "storage" / "reports/daily/2026-03-01.png") as chart:
        chart.load()
        assert chart.size == (1000, 400)


def test_the_chart_has_whole_run_ticks_and_a_legend_that_hides_no_bar():
    # Three runs of one job: matplotlib's default locator would tick 0, 0.5, 1, ..., 3.
    runs = [RunSummary(f"r{i}", "video_pipeline", "succeeded", on_day(1), 2.0 + i) for i in range(2)]
    runs += [RunSummary(f"s{i}", f"job_{i}", "failed", on_day(2), 1.0) for i in range(3)]
    runs.append(RunSummary("long", "video_pipeline", "failed", on_day(3), 30.0))

    figure = chart_figure(run_metrics(runs), "offload 2026-03-07 (UTC)")
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)  # lays out (constrained layout) as savefig does
    runs_axis, time_axis = figure.axes

    ticks = [t for t in runs_axis.get_xticks() if runs_axis.get_xlim()[0] <= t <= runs_axis.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    for axis in (runs_axis, time_axis):
        legend = axis.get_legend().get_window_extent(renderer)
        bars = [patch.get_window_extent(renderer) for patch in axis.patches if patch.get_width() > 0]
        assert bars
        assert not any(legend.overlaps(bar) for bar in bars)
        assert figure.bbox.contains(legend.x0, legend.y0) and figure.bbox.contains(legend.x1, legend.y1)


def test_the_chart_of_an_empty_day_says_so():
    figure = chart_figure(run_metrics([]), "offload 2026-03-01 (UTC)")

    for axis in figure.axes:
        assert [text.get_text() for text in axis.texts] == [NO_RUNS]
        assert axis.get_legend() is None and not axis.patches[1:]


@pytest.mark.parametrize(
    ("seconds", "p50", "p95"),
    [([10.0], 10.0, 10.0), ([1.0, 2.0, 3.0, 4.0, 100.0], 3.0, 80.8), ([5.0, 15.0], 10.0, 14.5)],
)
def test_percentiles_interpolate(seconds, p50, p95):
    runs = [RunSummary(f"r{i}", "job", "succeeded", on_day(1), s) for i, s in enumerate(seconds)]
    runs.append(RunSummary("queued", "job", "in_progress", on_day(2), None))

    [stats] = run_metrics(runs).jobs

    assert (stats.p50_seconds, stats.p95_seconds) == (p50, p95)
    assert (stats.runs, stats.in_progress, stats.success_rate) == (len(seconds) + 1, 1, 1.0)


def test_settings_are_checked():
    assert recipients({"OFFLOAD_REPORT_EMAILS": " a@example.com ,b@example.com,"}) == [
        "a@example.com",
        "b@example.com",
    ]
    with pytest.raises(ConfigurationError, match="OFFLOAD_REPORT_EMAILS: 'nope'"):
        recipients({"OFFLOAD_REPORT_EMAILS": "nope"})
    assert max_failure_rate({}) == 0.1
    with pytest.raises(
        ConfigurationError, match="OFFLOAD_REPORT_MAX_FAILURE_RATE: must be a number from 0 to 1"
    ):
        max_failure_rate({"OFFLOAD_REPORT_MAX_FAILURE_RATE": "20%"})


def test_a_day_is_backfilled_from_the_cli(tmp_path):
    (tmp_path / "home").mkdir()
    done = subprocess.run(
        [BIN / "dagster", "asset", "materialize", "-f", "definitions.py", "--select", "daily_report",
         "--partition", DAY],
        cwd=ROOT, env=cli_env(tmp_path), capture_output=True, text=True, timeout=180,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "data" / "storage" / "reports" / "daily" / f"{DAY}.html").is_file()
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        [record] = instance.get_run_records()
        assert record.dagster_run.tags["dagster/partition"] == DAY
        assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS


def test_days_are_days_in_the_reports_time_zone(instance, history, database, report_env):
    """New York's 6 March runs from 05:00 UTC on the 6th to 05:00 UTC on the 7th: it holds the run just
    before UTC midnight and the one at midnight, and none of the later ones."""
    asset, _job = build_daily_report("America/New_York")

    result = dg.materialize(
        [asset], partition_key="2026-03-06", instance=instance, resources={"database": database, **report_env}
    )

    metadata = materialization_metadata(result)
    assert (metadata["runs"], metadata["runs_failed"]) == (2, 1)
    assert history["before"] in metadata["failures"]
