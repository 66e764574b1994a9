"""The four schedules evaluated with ``dg.build_schedule_context`` at chosen instants, in UTC and across the
US daylight-saving changes in America/New_York: the cron strings are the seed's and valid, the ticks fall
exactly where they should (nothing in between, every 15 minutes of real time through the skipped and the
repeated hour), and each run request names the right partition or payload, with the tick's scheduled time
and the previous one as tags. Also: schedules are on by default, the example payloads are valid, time zones
come from ``OFFLOAD_TIMEZONE`` / ``OFFLOAD_<SCHEDULE>_TIMEZONE``, and the payload's month boundaries follow
the time zone."""

import datetime as dt
import uuid
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import yaml
from dagster._utils.schedules import cron_string_iterator, is_valid_cron_string

from offload.errors import ConfigurationError
from offload.paths import PROJECT_ROOT as ROOT
from offload.scheduling import ScheduledPayload, previous_tick, schedule_timezone
from pipelines.cleanup import cleanup
from pipelines.cleanup.payload import CleanupPayload
from pipelines.invoicing import invoicing
from pipelines.invoicing.payload import InvoicingPayload
from pipelines.reports import build_daily_report
from pipelines.sync import data_pipeline
from resources import resources_for
from resources.sync_table import SqlTable
from schedules import defs as schedule_defs
from schedules.daily_report import daily_report_schedule, missed_days
from schedules.frequent_sync import frequent_sync_schedule
from schedules.monthly_invoicing import monthly_invoicing_schedule
from schedules.weekly_cleanup import weekly_cleanup_schedule

NY = "America/New_York"
UTC = dt.UTC
CONFIGURED = SqlTable(url="sqlite:///unused.db", table="orders")


def at(zone: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
       fold: int = 0) -> dt.datetime:  # fmt: skip
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=ZoneInfo(zone), fold=fold)


def ticks(schedule: dg.ScheduleDefinition, start: dt.datetime, end: dt.datetime) -> list[str]:
    """Every instant the daemon fires ``schedule`` in ``[start, end)``, as it computes them."""
    found: list[str] = []
    for tick in cron_string_iterator(
        start.timestamp(), str(schedule.cron_schedule), schedule.execution_timezone
    ):
        if tick.timestamp() >= end.timestamp():
            return found
        found.append(tick.isoformat())
    return found


def evaluate(
    schedule: dg.ScheduleDefinition, when: dt.datetime, repository=None, **resources
) -> list[dg.RunRequest]:
    with dg.build_schedule_context(
        scheduled_execution_time=when, resources=resources or None, repository_def=repository
    ) as context:
        result = schedule.evaluate_tick(context)
    assert not result.skip_message, result.skip_message
    return list(result.run_requests or [])


def test_the_seed_crons_on_by_default_in_utc():
    schedules = {s.name: s for s in schedule_defs.schedules or []}
    assert {name: s.cron_schedule for name, s in schedules.items()} == {
        "daily_report": "0 9 * * *",
        "frequent_sync": "*/15 * * * *",
        "weekly_cleanup": "0 8 * * 1",
        "monthly_invoicing": "0 0 1 * *",
    }
    for schedule in schedules.values():
        assert is_valid_cron_string(str(schedule.cron_schedule))
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
        assert schedule.execution_timezone == "UTC"
    assert schedules["frequent_sync"].job_name == "data_pipeline"
    assert schedules["weekly_cleanup"].job_name == "cleanup"
    assert schedules["monthly_invoicing"].job_name == "invoicing"
    assert schedules["daily_report"].job_name == "daily_report_job"


# --- daily_report ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report_ny():
    asset, job = build_daily_report(NY)
    return daily_report_schedule(job, NY), asset, job


def test_daily_report_fires_at_nine_new_york_time_across_the_spring_change(report_ny):
    schedule, _asset, _job = report_ny
    assert ticks(schedule, at(NY, 2026, 3, 6), at(NY, 2026, 3, 10)) == [
        "2026-03-06T09:00:00-05:00",  # 14:00 UTC
        "2026-03-07T09:00:00-05:00",
        "2026-03-08T09:00:00-04:00",  # 13:00 UTC: the clocks moved, the local time did not
        "2026-03-09T09:00:00-04:00",
    ]


@pytest.mark.parametrize(
    ("when", "partition", "timestamp", "last"),
    [
        (at(NY, 2026, 3, 8, 9), "2026-03-07", "2026-03-08T09:00:00-04:00", "2026-03-07T09:00:00-05:00"),
        (at(NY, 2026, 11, 1, 9), "2026-10-31", "2026-11-01T09:00:00-05:00", "2026-10-31T09:00:00-04:00"),
        # The daemon hands the tick over in UTC: the partition is still New York's yesterday.
        (dt.datetime(2026, 2, 1, 14, tzinfo=UTC), "2026-01-31", "2026-02-01T09:00:00-05:00", None),
    ],
)
def test_daily_report_requests_yesterdays_partition(report_ny, when, partition, timestamp, last):
    schedule, asset, job = report_ny
    resources = resources_for("local")
    repository = dg.Definitions(
        assets=[asset], jobs=[job], schedules=[schedule], resources=resources
    ).get_repository_def()

    [request] = evaluate(schedule, when, repository)  # the repository checks the partition exists

    assert request.partition_key == partition
    assert request.run_key == partition  # one run per day, even if the tick is evaluated again
    assert request.tags["offload/timestamp"] == timestamp
    assert request.tags["offload/timezone"] == NY
    if last is not None:
        assert request.tags["offload/last_timestamp"] == last
    # Same wall-clock time the day before, whatever the offset was then.
    last_local = dt.datetime.fromisoformat(request.tags["offload/last_timestamp"]).replace(tzinfo=None)
    assert last_local == dt.datetime.fromisoformat(timestamp).replace(tzinfo=None) - dt.timedelta(days=1)


def test_daily_report_catches_up_every_day_missed_while_the_daemon_was_down(report_ny):
    """The clock is the tick's scheduled time, frozen at each evaluation: the daemon fires on 2 March, is
    down from the 3rd to the 6th, and fires again on the 7th. That tick requests every day since the last
    report (2-6 March), and its ``last_timestamp`` is the tick that ran before the outage, not 6 March."""
    schedule, asset, job = report_ny
    repository = dg.Definitions(
        assets=[asset], jobs=[job], schedules=[schedule], resources=resources_for("local")
    ).get_repository_def()

    with dg.instance_for_test() as instance:

        def fire(when: dt.datetime) -> list[dg.RunRequest]:
            """Evaluate the tick at ``when``, then do what the daemon and the runs do: one run per
            request, tagged by the daemon, each materializing its day."""
            with dg.build_schedule_context(
                instance=instance, scheduled_execution_time=when, repository_def=repository
            ) as context:
                result = schedule.evaluate_tick(context)
            requests = list(result.run_requests or [])
            for request in requests:
                tags = {**request.tags, "dagster/schedule_name": "daily_report"}
                instance.add_run(dg.DagsterRun(job_name=job.name, run_id=str(uuid.uuid4()), tags=tags))
                instance.report_runless_asset_event(
                    dg.AssetMaterialization("daily_report", partition=request.partition_key)
                )
            return requests

        first = fire(at(NY, 2026, 3, 2, 9))
        assert [r.partition_key for r in first] == ["2026-03-01"]

        back = fire(at(NY, 2026, 3, 7, 9))

        assert [r.partition_key for r in back] == [f"2026-03-0{day}" for day in range(2, 7)]
        assert {r.tags["offload/timestamp"] for r in back} == {"2026-03-07T09:00:00-05:00"}
        assert {r.tags["offload/last_timestamp"] for r in back} == {"2026-03-02T09:00:00-05:00"}

        # The next day (across the spring change) is an ordinary tick again.
        [after] = fire(at(NY, 2026, 3, 8, 9))
        assert after.partition_key == "2026-03-07"
        assert after.tags["offload/last_timestamp"] == "2026-03-07T09:00:00-05:00"


def test_daily_report_missed_days():
    done = {"2026-03-01", "2026-02-27"}
    assert missed_days(set(), dt.date(2026, 3, 5)) == [dt.date(2026, 3, 5)]
    assert missed_days(done, dt.date(2026, 3, 3)) == [dt.date(2026, 3, 2), dt.date(2026, 3, 3)]
    assert missed_days(done, dt.date(2026, 3, 1)) == []  # backfilled by hand already
    assert missed_days({"2026-03-09"}, dt.date(2026, 3, 3)) == [dt.date(2026, 3, 3)]


# --- frequent_sync ---------------------------------------------------------------------------------------


def test_frequent_sync_ticks_every_fifteen_real_minutes_through_both_changes():
    schedule = frequent_sync_schedule(NY)
    spring = ticks(schedule, at(NY, 2026, 3, 8, 1, 20), at(NY, 2026, 3, 8, 3, 20))
    assert spring == [
        "2026-03-08T01:30:00-05:00",
        "2026-03-08T01:45:00-05:00",
        "2026-03-08T03:00:00-04:00",  # 02:00-02:59 does not exist that night
        "2026-03-08T03:15:00-04:00",
    ]
    autumn = ticks(schedule, at(NY, 2026, 11, 1, 1, 30), at(NY, 2026, 11, 1, 1, 31, fold=1))
    assert autumn == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:45:00-04:00",
        "2026-11-01T01:00:00-05:00",  # the repeated hour runs again: every 15 minutes of real time
        "2026-11-01T01:15:00-05:00",
        "2026-11-01T01:30:00-05:00",
    ]


@pytest.mark.parametrize(
    ("when", "timestamp", "last"),
    [
        (at(NY, 2026, 3, 8, 3, 0), "2026-03-08T03:00:00-04:00", "2026-03-08T01:45:00-05:00"),
        (at(NY, 2026, 11, 1, 1, 0, fold=1), "2026-11-01T01:00:00-05:00", "2026-11-01T01:45:00-04:00"),
    ],
)
def test_frequent_sync_payload_carries_the_tick_and_the_one_before(when, timestamp, last):
    [request] = evaluate(frequent_sync_schedule(NY), when, sync_source=CONFIGURED)

    assert request.run_config == {"timestamp": timestamp, "last_timestamp": last, "timezone": NY}
    assert request.run_key == timestamp
    assert request.tags["offload/timestamp"] == timestamp
    assert request.tags["offload/last_timestamp"] == last
    dg.validate_run_config(data_pipeline, request.run_config)  # the job takes it as its payload
    gap = dt.datetime.fromisoformat(timestamp) - dt.datetime.fromisoformat(last)
    assert gap == dt.timedelta(minutes=15)


def test_frequent_sync_skips_with_the_reason_when_no_source_is_configured():
    with dg.build_schedule_context(
        scheduled_execution_time=at("UTC", 2026, 3, 8, 12), resources={"sync_source": SqlTable()}
    ) as context:
        result = frequent_sync_schedule("UTC").evaluate_tick(context)

    assert not result.run_requests
    assert "OFFLOAD_SYNC_SOURCE_URL" in (result.skip_message or "")


# --- weekly_cleanup and monthly_invoicing ----------------------------------------------------------------


def test_weekly_cleanup_runs_on_monday_mornings_only():
    schedule = weekly_cleanup_schedule("UTC")
    assert ticks(schedule, at("UTC", 2026, 3, 1), at("UTC", 2026, 3, 17)) == [
        "2026-03-02T08:00:00+00:00",
        "2026-03-09T08:00:00+00:00",
        "2026-03-16T08:00:00+00:00",
    ]
    [request] = evaluate(schedule, at("UTC", 2026, 3, 9, 8))
    assert request.run_config == {
        "timestamp": "2026-03-09T08:00:00+00:00",
        "last_timestamp": "2026-03-02T08:00:00+00:00",
        "timezone": "UTC",
    }
    dg.validate_run_config(cleanup, request.run_config)


def test_weekly_cleanup_in_new_york_keeps_eight_local_over_the_change():
    schedule = weekly_cleanup_schedule(NY)
    assert ticks(schedule, at(NY, 2026, 3, 1), at(NY, 2026, 3, 17)) == [
        "2026-03-02T08:00:00-05:00",
        "2026-03-09T08:00:00-04:00",
        "2026-03-16T08:00:00-04:00",
    ]


@pytest.mark.parametrize(
    ("zone", "when", "month", "start", "end"),
    [
        ("UTC", at("UTC", 2026, 3, 1), "2026-02", "2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00"),
        ("UTC", at("UTC", 2026, 1, 1), "2025-12", "2025-12-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00"),
        # March in New York starts in winter time and ends in summer time.
        (NY, at(NY, 2026, 4, 1), "2026-03", "2026-03-01T00:00:00-05:00", "2026-04-01T00:00:00-04:00"),
    ],
)
def test_monthly_invoicing_bills_the_previous_calendar_month(zone, when, month, start, end):
    schedule = monthly_invoicing_schedule(zone)
    assert (
        ticks(schedule, when - dt.timedelta(days=40), when + dt.timedelta(seconds=1))[-1] == when.isoformat()
    )

    [request] = evaluate(schedule, when)

    dg.validate_run_config(invoicing, request.run_config)
    payload = InvoicingPayload(**request.run_config)
    assert payload.last_scheduled_at is not None
    assert payload.last_scheduled_at.isoformat() == start  # the previous tick opened the billed month
    billed, first, after = payload.billed_month()
    assert (billed, first.isoformat(), after.isoformat()) == (month, start, end)


# --- time zones and payload rules ------------------------------------------------------------------------


def test_time_zones_come_from_the_environment():
    assert schedule_timezone("daily_report", {}) == "UTC"
    assert schedule_timezone("daily_report", {"OFFLOAD_TIMEZONE": "Europe/Berlin"}) == "Europe/Berlin"
    env = {"OFFLOAD_TIMEZONE": "Europe/Berlin", "OFFLOAD_DAILY_REPORT_TIMEZONE": NY}
    assert schedule_timezone("daily_report", env) == NY
    assert schedule_timezone("weekly_cleanup", env) == "Europe/Berlin"
    with pytest.raises(ConfigurationError, match="OFFLOAD_FREQUENT_SYNC_TIMEZONE: must be an IANA time zone"):
        schedule_timezone("frequent_sync", {"OFFLOAD_FREQUENT_SYNC_TIMEZONE": "Mars/Olympus"})


def test_previous_tick_is_strictly_before():
    assert previous_tick("0 0 1 * *", "UTC", at("UTC", 2026, 3, 1)) == at("UTC", 2026, 2, 1)
    assert previous_tick("0 0 1 * *", "UTC", at("UTC", 2026, 3, 1, 0, 0, 1)) == at("UTC", 2026, 3, 1)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"timestamp": "2026-03-01T00:00:00"}, "must carry its UTC offset"),
        ({"timestamp": "yesterday"}, "must be an ISO 8601 time"),
        ({"timestamp": "2026-03-01T00:00:00Z", "timezone": "Nowhere"}, "must be an IANA time zone"),
    ],
)
def test_scheduled_payload_rules(fields, message):
    with pytest.raises(ValueError, match=message):
        ScheduledPayload(**fields)


def test_scheduled_payload_refuses_a_time_in_the_future():
    """A hand-launched ``cleanup`` "as of" next year would count every retention from then: today's runs
    and files would all look old enough to remove."""
    now = dt.datetime.now(dt.UTC)
    later = (now + dt.timedelta(days=365)).isoformat()
    with pytest.raises(ValueError, match=r"(?s)\ntimestamp\n.*must not be in the future"):
        ScheduledPayload(timestamp=later)
    with pytest.raises(ValueError, match=r"(?s)\nlast_timestamp\n.*must not be in the future"):
        ScheduledPayload(timestamp=now.isoformat(), last_timestamp=later)
    with pytest.raises(ValueError, match="must not be in the future"):
        CleanupPayload(timestamp=later)
    # Within the allowed clock skew, and any past time, are fine.
    ScheduledPayload(timestamp=(now + dt.timedelta(minutes=1)).isoformat())
    ScheduledPayload(timestamp="2001-01-01T00:00:00Z")


@pytest.mark.parametrize(
    ("example", "job"), [("data_pipeline", data_pipeline), ("cleanup", cleanup), ("invoicing", invoicing)]
)
def test_example_payloads_are_valid(example, job):
    payload = yaml.safe_load((ROOT / "examples" / f"{example}.yaml").read_text())
    assert dg.validate_run_config(job, payload)
