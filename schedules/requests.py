"""The run request of a tick: its scheduled time and the previous one, as tags and (for jobs whose run config
is a payload) as the payload's ``timestamp`` / ``last_timestamp`` / ``timezone``."""

import dagster as dg

from offload.scheduling import ScheduledTime


def payload_request(tick: ScheduledTime) -> dg.RunRequest:
    """One run per tick (the run key is the scheduled time), its payload the tick's time."""
    return dg.RunRequest(run_key=tick.timestamp.isoformat(), run_config=tick.payload(), tags=tick.tags())
