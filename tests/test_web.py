"""The web jobs end to end against HTTP servers on loopback (reached through ``allow_hosts``, as a deployment
would list an internal host): ``resilient_task`` retrying transient errors at both levels (the request's
own budget, then the step's policy), aborting at once on a 404 or a refused address, sending a POST body
with one idempotency key; ``scrape_websites`` extracting with CSS selectors, keeping every other URL's
result when one keeps failing; their payload rules (one line per bad field); and the extraction rules."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest
from pydantic import ValidationError

from benchmarks.support.http_server import LocalHTTPServer, body, statuses
from offload.net.http import HttpClient
from offload.payload import payload_errors
from offload.retry import MAX_ATTEMPTS_TAG, POLICY_TAG, RetryPolicy
from pipelines.web import resilient_task, scrape_websites
from pipelines.web.extract import select, selector_error
from pipelines.web.jobs import RESILIENT_RETRY
from pipelines.web.payload import ResilientPayload, ScrapePayload

FAST_STEPS = RetryPolicy(max_attempts=3, min_delay=0.01, max_delay=0.05, randomize=False).tags()
JSON = {"Content-Type": "application/json"}
PAGE = b"""<html><head><meta charset="utf-8"><title>News</title></head><body>
<h1>Front page</h1>
<article><a class="title" href="/one">First   story</a></article>
<article><a class="title" href="/two">Second <b>story</b></a></article>
<a href="/about">About</a>
</body></html>"""


@pytest.fixture
def server() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer({"/page": body(PAGE, headers={"Content-Type": "text/html"})}) as running:
        yield running


def http_for(server: LocalHTTPServer, **settings: Any) -> HttpClient:
    """Requests may reach ``server`` (and only it), with quick backoff."""
    return HttpClient(**{"allow_hosts": [server.origin], "min_delay": 0.01, "max_delay": 0.05, **settings})


def run(
    job: dg.JobDefinition, payload: dict[str, Any], http: HttpClient, tags: dict[str, str] | None = None
) -> dg.ExecuteInProcessResult:
    return job.execute_in_process(
        run_config=payload, resources={"http": http}, tags=tags or FAST_STEPS, raise_on_error=False
    )


def description(result: dg.ExecuteInProcessResult) -> str | None:
    user = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    return user.description if user is not None else None


def step_attempts(result: dg.ExecuteInProcessResult) -> int:
    restarts = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_RESTARTED]
    return 1 + len(restarts)


# --- resilient_task -----------------------------------------------------------------------------------------


def test_resilient_task_declares_its_own_policy_as_a_job_tag() -> None:
    assert resilient_task.tags[POLICY_TAG] == RESILIENT_RETRY.model_dump_json()
    assert RESILIENT_RETRY.max_attempts == 5


def test_resilient_task_retries_transient_errors_and_succeeds(server: LocalHTTPServer) -> None:
    # Each step attempt makes up to 2 requests: the first attempt gets 503, 503 (its budget spent, the
    # step is retried); the second gets 429 (no headers: backoff), then the answer.
    server.routes["/api"] = statuses(503, 503, 429, then=body(b'{"ok": true}', headers=JSON))
    result = run(resilient_task, {"url": server.url("/api")}, http_for(server, max_attempts=2))
    assert result.success
    out = result.output_for_node("call_endpoint")
    assert (out["status"], out["json"], out["step_attempt"], out["request_attempts"]) == (
        200,
        {"ok": True},
        2,
        2,
    )
    assert server.count("/api") == 4


def test_resilient_task_gives_up_after_the_steps_attempts(server: LocalHTTPServer) -> None:
    server.routes["/down"] = body(b"oops", 500)
    result = run(resilient_task, {"url": server.url("/down")}, http_for(server, max_attempts=2))
    assert not result.success
    assert step_attempts(result) == 3  # the run's policy (FAST_STEPS), over the job's own 5
    assert server.count("/down") == 6  # 2 requests per attempt
    error = result.get_step_failure_events()[0].step_failure_data.error
    assert error is not None and error.cause is not None
    assert f"HTTP 500 from {server.url('/down')}" in error.cause.message


def test_per_run_max_attempts_reaches_the_job(server: LocalHTTPServer) -> None:
    server.routes["/down"] = body(b"", 502)
    tags = {**FAST_STEPS, MAX_ATTEMPTS_TAG: "2"}
    result = run(resilient_task, {"url": server.url("/down")}, http_for(server, max_attempts=1), tags)
    assert step_attempts(result) == 2
    assert server.count("/down") == 2


def test_resilient_task_aborts_on_404_after_one_request(server: LocalHTTPServer) -> None:
    result = run(resilient_task, {"url": server.url("/missing")}, http_for(server))
    assert not result.success
    assert step_attempts(result) == 1
    assert server.count("/missing") == 1
    assert description(result) == f"url: HTTP 404 from {server.url('/missing')}"


def test_resilient_task_refuses_loopback_without_an_allow_list(server: LocalHTTPServer) -> None:
    result = run(resilient_task, {"url": server.url("/page")}, HttpClient(min_delay=0.01))
    assert not result.success
    assert description(result) == "url: refused: 127.0.0.1 is a loopback address"
    assert server.request_count == 0


def test_resilient_task_posts_its_body_with_one_idempotency_key(server: LocalHTTPServer) -> None:
    server.routes["/hook"] = statuses(503, then=body(b'{"id": 7}', headers=JSON))
    payload = {"url": server.url("/hook"), "method": "POST", "body": '{"order": 42}'}
    result = run(resilient_task, payload, http_for(server))
    assert result.success
    assert result.output_for_node("call_endpoint")["json"] == {"id": 7}
    assert server.methods == ["POST", "POST"]
    assert server.bodies == [b'{"order": 42}'] * 2


# --- scrape_websites ----------------------------------------------------------------------------------------


def results_by_path(result: dg.ExecuteInProcessResult, server: LocalHTTPServer) -> dict[str, dict[str, Any]]:
    return {r["url"].removeprefix(f"http://{server.origin}"): r for r in result.output_for_node("scrape")}


def test_scrape_extracts_text_and_keeps_the_others_when_one_url_keeps_failing(
    server: LocalHTTPServer,
) -> None:
    server.routes["/flaky"] = statuses(503, then=body(b"<h1>Back again</h1>"))
    server.routes["/down"] = body(b"", 503)
    urls = [server.url(p) for p in ("/page", "/flaky", "/down", "/missing")]
    result = run(scrape_websites, {"urls": urls, "selector": "h1, a.title"}, http_for(server, max_attempts=3))
    assert result.success
    got = results_by_path(result, server)
    assert list(got) == ["/page", "/flaky", "/down", "/missing"]  # the payload's order
    assert got["/page"]["matches"] == ["Front page", "First story", "Second story"]
    assert got["/flaky"] == got["/flaky"] | {"ok": True, "matches": ["Back again"], "attempts": 2}
    assert got["/down"] | {"seconds": 0} == {
        "url": urls[2], "ok": False, "retryable": True, "status": 503, "seconds": 0,
        "error": f"HTTP 503 from {urls[2]}",
    }  # fmt: skip
    assert got["/missing"]["ok"] is False and got["/missing"]["retryable"] is False
    assert server.count("/down") == 3  # its requests ran out; nothing else was lost
    assert server.count("/missing") == 1
    assert step_attempts(result) == 1  # partial success is success: no step retry
    metadata = next(e for e in result.all_events if e.is_successful_output).step_output_data.metadata
    assert (metadata["succeeded"].value, metadata["failed"].value) == (2, 2)
    assert f"| {urls[2]} | HTTP 503 from {urls[2]} |" in str(metadata["results"].value)


def test_scrape_extracts_an_attribute(server: LocalHTTPServer) -> None:
    payload = {"urls": [server.url("/page")], "selector": "a", "attribute": "href", "max_matches": 2}
    result = run(scrape_websites, payload, http_for(server))
    assert result.output_for_node("scrape")[0]["matches"] == ["/one", "/two"]


def test_scrape_fails_when_every_url_failed(server: LocalHTTPServer) -> None:
    urls = [server.url("/a"), server.url("/b")]
    result = run(scrape_websites, {"urls": urls, "selector": "h1"}, http_for(server))
    assert not result.success
    assert step_attempts(result) == 1  # 404s: aborted, not retried
    assert description(result) == f"urls: all 2 failed; first: HTTP 404 from {urls[0]}"


def test_scrape_all_failing_transiently_is_retried_as_a_step(server: LocalHTTPServer) -> None:
    server.routes["/down"] = body(b"", 503)
    result = run(
        scrape_websites, {"urls": [server.url("/down")], "selector": "h1"}, http_for(server, max_attempts=1)
    )
    assert not result.success
    assert step_attempts(result) == 3
    assert server.count("/down") == 3


def test_scrape_refuses_loopback_per_url_without_an_allow_list(server: LocalHTTPServer) -> None:
    with LocalHTTPServer({"/page": body(PAGE)}) as other:
        urls = [server.url("/page"), other.url("/page")]
        result = run(scrape_websites, {"urls": urls, "selector": "h1"}, http_for(server))
        assert result.success
        allowed, refused = result.output_for_node("scrape")
        assert allowed["matches"] == ["Front page"]
        assert refused["error"] == "refused: 127.0.0.1 is a loopback address"
        assert other.request_count == 0


# --- payloads -----------------------------------------------------------------------------------------------


def lines_for(model: type[dg.Config], **fields: Any) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        model(**fields)
    lines = payload_errors(caught.value)
    assert lines is not None
    return lines


def test_scrape_payload_rules_one_line_per_bad_field() -> None:
    assert lines_for(ScrapePayload, urls=[], selector="h1") == ["urls = []: must list 1 to 100 URLs, got 0"]
    assert lines_for(ScrapePayload, urls=["https://a.test/"] * 101, selector="h1") == [
        "urls = [101 items]: must list 1 to 100 URLs, got 101"
    ]
    assert lines_for(
        ScrapePayload, urls=["https://a.test/", "ftp://b.test/x", "http:///x"], selector="h1["
    ) == [
        "urls.1 = 'ftp://b.test/x': must be a URL with scheme http, https",
        "urls.2 = 'http:///x': must name a host after http://",
        "selector = 'h1[': is not a valid CSS selector",
    ]
    assert lines_for(ScrapePayload, urls=["https://a.test/"], selector="p", max_matches=0) == [
        "max_matches = 0: must be from 1 to 1000"
    ]


def test_resilient_payload_rules() -> None:
    assert lines_for(ResilientPayload, url="file:///etc/passwd") == [
        "url = 'file:///etc/passwd': must be a URL with scheme http, https"
    ]
    assert lines_for(ResilientPayload, url="https://a.test/", method="DELETE") == [
        "method = 'DELETE': must be one of GET, POST"
    ]
    assert lines_for(ResilientPayload, url="https://a.test/", body="{}") == [
        "body = '{}': only allowed with method POST"
    ]
    assert ResilientPayload(url="https://a.test/", method="post", body="{}").method == "POST"


def test_a_bad_payload_starts_no_run(server: LocalHTTPServer) -> None:
    with pytest.raises(Exception) as caught:
        scrape_websites.execute_in_process(
            run_config={"urls": ["gopher://x"], "selector": "h1"}, resources={"http": http_for(server)}
        )
    assert payload_errors(caught.value) == ["urls.0 = 'gopher://x': must be a URL with scheme http, https"]
    assert server.request_count == 0


# --- extraction ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "attribute", "expected"),
    [
        ("title", None, ["News"]),
        ("article > a.title", None, ["First story", "Second story"]),
        ("a:not(.title)", "href", ["/about"]),
        ("a", "data-missing", []),
        ("table", None, []),
    ],
)
def test_select(selector: str, attribute: str | None, expected: list[str]) -> None:
    assert select(PAGE, selector, attribute) == expected


def test_select_decodes_by_the_declared_charset() -> None:
    latin = "<h1>Caf\u00e9</h1>".encode("latin-1")
    assert select(b'<meta charset="iso-8859-1">' + latin, "h1") == ["Caf\u00e9"]
    assert select(latin, "h1", charset="iso-8859-1") == ["Caf\u00e9"]  # the HTTP header wins


@pytest.mark.parametrize("selector", ["", "   ", "h1[", "div >", "::"])
def test_selector_error(selector: str) -> None:
    assert selector_error(selector) is not None
    assert selector_error("main article:nth-of-type(2n) > a[href^='/']") is None


@pytest.mark.parametrize(
    ("name", "model"), [("resilient_task", ResilientPayload), ("scrape_websites", ScrapePayload)]
)
def test_example_payload_files_are_valid(name: str, model: type[dg.Config]) -> None:
    import yaml

    from offload.paths import PROJECT_ROOT

    data = yaml.safe_load((PROJECT_ROOT / "examples" / f"{name}.yaml").read_text())
    payload = model(**data)
    assert {key: getattr(payload, key) for key in data} == data
