"""Event triggers: ``ops_failure_alert`` tells ops when a run fails for good (``failure_alerts.py``);
``webhook_inbox`` launches webhook events the gateway did not (``webhook_inbox.py``)."""

import dagster as dg

from sensors.failure_alerts import ops_failure_alert
from sensors.webhook_inbox import webhook_inbox

defs = dg.Definitions(sensors=[ops_failure_alert, webhook_inbox])
