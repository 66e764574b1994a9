"""The web jobs' steps: one risky call (``call_endpoint``) and a fan of page fetches (``scrape``).

Both fetch through ``HttpClient`` (``offload.net.http``): the SSRF guard on every connection, per-request
timeouts, and the request's own retries per status. What is left after those is the step's to decide:
an error that another attempt could fix is raised as it is, so the step's retry policy (``@retrying``)
tries again; one that cannot (a 404, a refused address) is an ``AbortTaskRunError`` and ends the run at
once, which is what the ops alert (``sensors/failure_alerts.py``) then reports.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dagster as dg

from offload.errors import AbortTaskRunError, FetchError
from offload.log import StepLog, redact
from offload.net.http import Fetched, HttpClient, safe_url
from offload.result import job_result
from offload.retry import retrying
from pipelines.web.extract import select
from pipelines.web.payload import ResilientPayload, ScrapePayload

PREVIEW_CHARS = 500
SCRAPE_THREADS = 8


def _json_or_none(page: Fetched) -> Any:
    if "json" not in page.headers.get("content-type", ""):
        return None
    try:
        return json.loads(page.content)
    except ValueError:
        return None


@dg.op(tags={"kind": "http"})
@retrying()
def call_endpoint(
    context: dg.OpExecutionContext, config: ResilientPayload, http: HttpClient
) -> dg.Output[dict[str, Any]]:
    """Call ``url``; a transient failure is retried (by the request, then by the step), anything else
    aborts the run with the reason."""
    log = StepLog(context)
    headers = {"Accept": "application/json, */*;q=0.5"}
    if config.method == "POST":
        headers["Content-Type"] = "application/json"
        # The same key on every attempt of this run family, so a server that dedupes acts once.
        headers["Idempotency-Key"] = f"resilient_task/{context.run.root_run_id or context.run_id}"
    try:
        page = http.fetch(config.url, method=config.method, headers=headers, content=config.body, log=log)
    except FetchError as error:
        if not error.retryable:
            raise AbortTaskRunError(f"url: {error}") from None
        raise
    text = page.text
    result = {
        "url": safe_url(page.url),
        "status": page.status,
        "content_type": page.headers.get("content-type", ""),
        "bytes": len(page.content),
        "request_attempts": page.attempts,
        "step_attempt": context.retry_number + 1,
        "json": _json_or_none(page),
        "preview": text[:PREVIEW_CHARS],
    }
    log.info("called", {k: result[k] for k in ("url", "status", "bytes", "request_attempts", "step_attempt")})
    return job_result(result, metadata={
        "status": page.status,
        "request_attempts": page.attempts,
        "step_attempt": result["step_attempt"],
        "preview": dg.MetadataValue.text(redact(text[:PREVIEW_CHARS])),
    })  # fmt: skip


def _scrape_one(http: HttpClient, config: ScrapePayload, url: str, log: StepLog) -> dict[str, Any]:
    """One URL's result; a fetch that failed for good is a result too (``ok: False``), not an exception."""
    started = time.perf_counter()
    try:
        page = http.fetch(url, headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.5"}, log=log)
    except FetchError as error:
        return {"url": url, "ok": False, "error": str(error), "retryable": error.retryable,
                "status": error.status, "seconds": round(time.perf_counter() - started, 3)}  # fmt: skip
    matches = select(page.content, config.selector, config.attribute, config.max_matches, page.encoding)
    return {"url": url, "ok": True, "status": page.status, "count": len(matches), "matches": matches,
            "attempts": page.attempts, "seconds": round(time.perf_counter() - started, 3)}  # fmt: skip


def _table(results: list[dict[str, Any]]) -> str:
    rows = ["| url | result | matches |", "|---|---|---|"]
    for r in results:
        outcome = f"HTTP {r['status']}" if r["ok"] else r["error"].replace("|", "\\|")
        rows.append(f"| {safe_url(r['url'])} | {outcome} | {r.get('count', '')} |")
    return "\n".join(rows)


@dg.op(tags={"kind": "http"})
@retrying()
def scrape(
    context: dg.OpExecutionContext, config: ScrapePayload, http: HttpClient
) -> dg.Output[list[dict[str, Any]]]:
    """Fetch every URL (a few at a time) and extract what the selector matches.

    A URL that still fails after its request retries is reported in its result and the others are kept.
    Only when none succeeded does the step fail: retryable if any failure was, so the step's policy tries
    the lot again later, else aborted.
    """
    log = StepLog(context)
    with ThreadPoolExecutor(max_workers=min(SCRAPE_THREADS, len(config.urls))) as pool:
        results = list(pool.map(lambda url: _scrape_one(http, config, url, log), config.urls))
    failed = [r for r in results if not r["ok"]]
    for r in failed:
        log.warning("url failed", {"url": safe_url(r["url"]), "error": r["error"]})
    summary = {"urls": len(results), "succeeded": len(results) - len(failed), "failed": len(failed)}
    log.info("scraped", summary)
    if len(failed) == len(results):
        reason = f"urls: all {len(results)} failed; first: {failed[0]['error']}"
        if any(r["retryable"] for r in failed):
            raise FetchError(reason, retryable=True)
        raise AbortTaskRunError(reason)
    return job_result(results, metadata={**summary, "results": dg.MetadataValue.md(_table(results))})
