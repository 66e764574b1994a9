"""Event triggers (webhook inbox, failure alerts). None are defined yet."""

import dagster as dg

defs = dg.Definitions(sensors=[])
