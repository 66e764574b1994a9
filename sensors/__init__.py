"""Event triggers: ``ops_failure_alert`` tells ops when a run fails for good (``failure_alerts.py``)."""

import dagster as dg

from sensors.failure_alerts import ops_failure_alert

defs = dg.Definitions(sensors=[ops_failure_alert])
