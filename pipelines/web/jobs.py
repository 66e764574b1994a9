"""``resilient_task`` and ``scrape_websites``: the run config is the payload (``offload.payload``)."""

from __future__ import annotations

from typing import Any

import dagster as dg

from offload.payload import payload_mapping
from offload.retry import RetryPolicy
from offload.runtime.concurrency import Queue
from pipelines.web.payload import ResilientPayload, ScrapePayload
from pipelines.web.steps import call_endpoint, scrape

# Calls to other people's servers: a few at a time, so a burst of runs cannot hammer them.
QUEUE = Queue("web", limit=4)


RESILIENT_RETRY = RetryPolicy(max_attempts=5, factor=1.8, min_delay=0.5, max_delay=30.0, randomize=False)
"""The seed's ``resilient-task`` declares its own policy; as a job tag it overrides the project default."""


def _resilient_run_config(payload: ResilientPayload) -> dict[str, Any]:
    return {"ops": {"call_endpoint": {"config": payload.model_dump()}}}


def _scrape_run_config(payload: ScrapePayload) -> dict[str, Any]:
    return {"ops": {"scrape": {"config": payload.model_dump()}}}


@dg.job(
    name="resilient_task",
    description="Call an HTTP endpoint: transient errors retried (5 attempts), others abort and alert ops.",
    config=payload_mapping(ResilientPayload, _resilient_run_config),
    tags={"offload/kind": "web", **RESILIENT_RETRY.tags(), **QUEUE.job_tags()},
)
def resilient_task() -> None:
    call_endpoint()


@dg.job(
    name="scrape_websites",
    description="Fetch 1-100 URLs and extract what a CSS selector matches, with a result per URL.",
    config=payload_mapping(ScrapePayload, _scrape_run_config),
    tags={"offload/kind": "web", **QUEUE.job_tags()},
)
def scrape_websites() -> None:
    scrape()
