"""Scheduled time, as Trigger.dev's scheduled tasks see it: ``timestamp`` and ``lastTimestamp``.

Every scheduled run carries the instant it was scheduled for and the schedule's previous instant, both in
the schedule's time zone (ISO 8601 with its offset: ``2026-03-08T09:00:00-04:00``): as run tags for every
schedule, and as the payload (``ScheduledPayload``) for jobs whose run config is a payload. A run started
by hand names its own ``timestamp``, so ``dagster job execute`` can run any job "as of" any date.

Time zones are UTC unless ``OFFLOAD_TIMEZONE`` (every schedule) or ``OFFLOAD_<SCHEDULE>_TIMEZONE`` (one
schedule, e.g. ``OFFLOAD_DAILY_REPORT_TIMEZONE``) names an IANA zone; Dagster's cron iteration is DST-aware.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo, available_timezones

import dagster as dg
from pydantic import Field, field_validator

from offload.errors import ConfigurationError

# The iterator Dagster's scheduler daemon itself walks cron strings with (private, but the Dagster set is
# pinned): the previous tick we compute is then the one the daemon fired, across DST changes too.
from offload.runtime.dagster_internals import is_valid_cron_string, reverse_cron_string_iterator

DEFAULT_TIMEZONE = "UTC"
TIMESTAMP_TAG = "offload/timestamp"
LAST_TIMESTAMP_TAG = "offload/last_timestamp"
TIMEZONE_TAG = "offload/timezone"
SCHEDULE_NAME_TAG = "dagster/schedule_name"  # Dagster's daemon tags every run a schedule launches with it
_HISTORY = 100  # newest runs of a schedule searched for its last tick (catch-up runs share their tick)
# How far past the clock a payload's time may lie: hosts' clocks differ by seconds, a schedule's tick is
# never ahead of the daemon's clock. A run "as of" a later time would let ``cleanup`` expire today's files.
MAX_FUTURE_SKEW = dt.timedelta(minutes=5)


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def check_timezone(name: str) -> str:
    """``name`` if it is an IANA time zone (``Europe/Berlin``), else ``ValueError``. Only names in the
    time zone database: ``ZoneInfo`` alone would also open files such as ``localtime``."""
    if name not in _zones():
        raise ValueError(f"must be an IANA time zone such as UTC or Europe/Berlin, got {name!r}")
    return name


def schedule_timezone(schedule: str, environ: Mapping[str, str] | None = None) -> str:
    """The time zone ``schedule`` runs in: ``OFFLOAD_<SCHEDULE>_TIMEZONE``, else ``OFFLOAD_TIMEZONE``, else
    UTC. A name that is not a time zone is a ``ConfigurationError`` naming the variable."""
    env = os.environ if environ is None else environ
    for variable in (f"OFFLOAD_{schedule.upper()}_TIMEZONE", "OFFLOAD_TIMEZONE"):
        value = env.get(variable, "").strip()
        if value:
            try:
                return check_timezone(value)
            except ValueError as error:
                raise ConfigurationError(f"{variable}: {error}") from None
    return DEFAULT_TIMEZONE


def check_cron(cron: str) -> str:
    if not is_valid_cron_string(cron):
        raise ValueError(f"cron: {cron!r} is not a valid 5-field cron string")
    return cron


def previous_tick(cron: str, timezone: str, at: dt.datetime) -> dt.datetime:
    """The last instant of ``cron`` (in ``timezone``) strictly before ``at``."""
    ticks = reverse_cron_string_iterator(at.timestamp() - 1, check_cron(cron), timezone)
    return next(ticks).astimezone(ZoneInfo(timezone))


def last_run_tick(instance: dg.DagsterInstance, schedule: str, before: dt.datetime) -> dt.datetime | None:
    """The tick (``offload/timestamp``) of the newest run ``schedule`` launched for a tick before ``before``:
    the last tick that actually ran. None if it never launched one."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={SCHEDULE_NAME_TAG: schedule}), limit=_HISTORY
    )
    ticks = []
    for record in records:
        value = record.dagster_run.tags.get(TIMESTAMP_TAG)
        if value:
            with contextlib.suppress(ValueError):
                ticks.append(parse_timestamp(value))
    earlier = [tick for tick in ticks if tick < before]
    return max(earlier) if earlier else None


@dataclass(frozen=True)
class ScheduledTime:
    """One tick of a schedule: when it was due and when the schedule was due before it."""

    timestamp: dt.datetime
    last_timestamp: dt.datetime
    timezone: str

    @classmethod
    def of(
        cls, context: dg.ScheduleEvaluationContext, cron: str, timezone: str, schedule: str | None = None
    ) -> ScheduledTime:
        """The tick the daemon is evaluating (now, for a context built without a time).

        ``last_timestamp`` is the last tick of ``schedule`` that actually ran (launched a run), read from
        the instance: after the daemon was down for days it is the tick before the outage, not the cron's
        previous time. Before the schedule's first run, or for a context without an instance (a test), it
        is the cron's previous time.
        """
        at = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
        zone = ZoneInfo(timezone)
        local = at.astimezone(zone)
        last = None
        if schedule is not None and context.instance_ref is not None:
            last = last_run_tick(context.instance, schedule, local)
        last = last.astimezone(zone) if last is not None else previous_tick(cron, timezone, local)
        return cls(local, last, timezone)

    def tags(self) -> dict[str, str]:
        return {
            TIMESTAMP_TAG: self.timestamp.isoformat(),
            LAST_TIMESTAMP_TAG: self.last_timestamp.isoformat(),
            TIMEZONE_TAG: self.timezone,
        }

    def payload(self) -> dict[str, str]:
        """The ``ScheduledPayload`` fields of this tick."""
        return {
            "timestamp": self.timestamp.isoformat(),
            "last_timestamp": self.last_timestamp.isoformat(),
            "timezone": self.timezone,
        }


def parse_timestamp(value: str) -> dt.datetime:
    """An ISO 8601 instant with its offset (``Z`` or ``+02:00``); ``ValueError`` for a bare local time."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO 8601 time such as 2026-03-01T00:00:00+00:00") from None
    if parsed.tzinfo is None:
        raise ValueError("must carry its UTC offset, e.g. 2026-03-01T00:00:00+00:00 or ...Z")
    return parsed


def check_not_future(value: str, now: dt.datetime | None = None) -> str:
    """``value`` (an ISO 8601 instant) if it is not later than ``now`` plus ``MAX_FUTURE_SKEW``, else
    ``ValueError``: scheduled jobs work "as of" their time, and the future has nothing to work on yet."""
    parsed = parse_timestamp(value)
    now = now or dt.datetime.now(dt.UTC)
    if parsed > now + MAX_FUTURE_SKEW:
        minutes = int(MAX_FUTURE_SKEW.total_seconds() // 60)
        clock = now.isoformat(timespec="seconds")
        raise ValueError(f"must not be in the future (more than {minutes} minutes after now, {clock})")
    return value


class ScheduledPayload(dg.Config):
    """The payload every scheduled job starts from (Trigger.dev's ``payload.timestamp`` and
    ``payload.lastTimestamp``). Run by hand, ``timestamp`` is the instant to run as of."""

    timestamp: str = Field(description="When this run was scheduled for (ISO 8601 with offset).")
    last_timestamp: str | None = Field(
        default=None, description="When the schedule was due before (ISO 8601 with offset); none by hand."
    )
    timezone: str = Field(default=DEFAULT_TIMEZONE, description="IANA time zone the schedule runs in.")

    @field_validator("timestamp")
    @classmethod
    def _timestamp(cls, value: str) -> str:
        return check_not_future(value)

    @field_validator("last_timestamp")
    @classmethod
    def _last_timestamp(cls, value: str | None) -> str | None:
        if value is not None:
            check_not_future(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return check_timezone(value)

    @property
    def scheduled_at(self) -> dt.datetime:
        """``timestamp`` as an aware datetime in the payload's time zone."""
        return parse_timestamp(self.timestamp).astimezone(ZoneInfo(self.timezone))

    @property
    def last_scheduled_at(self) -> dt.datetime | None:
        if self.last_timestamp is None:
            return None
        return parse_timestamp(self.last_timestamp).astimezone(ZoneInfo(self.timezone))
