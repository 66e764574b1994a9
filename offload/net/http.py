"""``fetch``: the one way offload makes an HTTP request, retried per status (Trigger.dev's ``retry.fetch``).

Every HTTP call offload itself makes goes through ``fetch`` (the downloader, the web jobs through the
``HttpClient`` resource), so there is one retry loop for HTTP, built on tenacity:

- a status is looked up in ``FetchRetry.by_status`` (keys like ``"429"`` or ``"500-599"``): ``"headers"``
  waits as long as the server asks (``Retry-After`` in seconds or as an HTTP date, else ``RateLimit-Reset``
  / ``X-RateLimit-Reset``), ``"backoff"`` waits by the policy's formula; a status not listed (404, 401,
  any other 4xx) fails at once. Defaults: 408, 409 and 5xx back off, 429 follows the headers.
- connection errors (refused, reset) and timeouts are retried with backoff;
- the budget (``FetchRetry.policy.max_attempts``) is the request's own, independent of the step's retry
  policy: a step that fails after its requests ran out may still be retried as a whole by ``@retrying``.

Redirects are followed here, at most ``MAX_REDIRECTS``, only to http and https. The client decides where
a connection may go: pass one from ``offload.net.address_policy.guarded_client`` for any user-supplied URL.
Failures are ``FetchError``s whose one line names the rule and a URL without credentials or query.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar, overload
from urllib.parse import urlsplit

import dagster as dg
import httpx
import tenacity
from pydantic import BaseModel, ConfigDict, Field, field_validator

from offload.errors import FetchError
from offload.log import StepLog, redact
from offload.net.address_policy import guarded_client
from offload.retry import RetryPolicy

MAX_REDIRECTS = 5
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
Strategy = Literal["backoff", "headers"]
T = TypeVar("T")

_RESET_HEADERS = ("ratelimit-reset", "x-ratelimit-reset", "x-rate-limit-reset")
_EPOCH_SECONDS = 1e9  # a reset value this large is a Unix time, not a number of seconds (year 2001+)
_EPOCH_MILLIS = 1e11


def safe_url(url: str | httpx.URL) -> str:
    """``url`` fit for a message or a log: no user, password, query string or fragment."""
    parts = urlsplit(str(url))
    netloc = parts.netloc.rpartition("@")[2]
    return redact(f"{parts.scheme}://{netloc}{parts.path}")


def _status_range(key: str) -> tuple[int, int]:
    low, _, high = key.partition("-")
    first, last = int(low), int(high or low)
    if not 100 <= first <= last <= 599:
        raise ValueError
    return first, last


class FetchRetry(BaseModel):
    """How ``fetch`` retries one request: the attempt budget and backoff, and a strategy per status."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: RetryPolicy = RetryPolicy(max_attempts=3, factor=2, min_delay=1.0, max_delay=30.0)
    by_status: dict[str, Strategy] = Field(
        default={"408": "backoff", "409": "backoff", "429": "headers", "500-599": "backoff"}
    )
    max_wait: float = Field(default=60.0, ge=0.0)
    """The longest a rate-limit header may make ``fetch`` wait; a longer ask fails (retryable) instead."""

    @field_validator("by_status")
    @classmethod
    def _keys_are_statuses(cls, value: dict[str, Strategy]) -> dict[str, Strategy]:
        for key in value:
            try:
                _status_range(key)
            except ValueError:
                raise ValueError(f"{key!r} is not a status like '429' or a range like '500-599'") from None
        return value

    def strategy_for(self, status: int) -> Strategy | None:
        """The strategy for ``status``, or None when it must fail at once."""
        for key, strategy in self.by_status.items():
            first, last = _status_range(key)
            if first <= status <= last:
                return strategy
        return None


DEFAULT_RETRY = FetchRetry()


def wait_from_headers(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds a rate-limited server asks to wait, or None if its headers do not say.

    ``Retry-After`` is seconds or an HTTP date (RFC 9110). ``RateLimit-Reset`` (IETF draft) is seconds;
    ``X-RateLimit-Reset`` is seconds at some APIs and a Unix time (seconds or milliseconds) at others, told
    apart by size.
    """
    now = time.time() if now is None else now
    value = headers.get("retry-after", "").strip()
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
        except (TypeError, ValueError, IndexError):
            pass
    for name in _RESET_HEADERS:
        try:
            number = float(headers.get(name, "").strip())
        except ValueError:
            continue
        if number >= _EPOCH_MILLIS:
            return max(0.0, number / 1000 - now)
        if number >= _EPOCH_SECONDS:
            return max(0.0, number - now)
        return max(0.0, number)
    return None


@dataclass(frozen=True)
class Fetched:
    """A response read in full (under a size cap): what ``fetch`` returns without a ``consume``."""

    url: str
    status: int
    headers: httpx.Headers
    content: bytes
    encoding: str | None
    attempts: int = 1

    @property
    def text(self) -> str:
        return self.content.decode(self.encoding or "utf-8", errors="replace")


def read_body(max_bytes: int) -> Callable[[httpx.Response], Fetched]:
    """A ``consume`` that reads the whole body, failing for good past ``max_bytes``."""

    def consume(response: httpx.Response) -> Fetched:
        where = safe_url(response.url)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise FetchError(f"too large: more than {max_bytes} bytes ({declared} declared) at {where}")
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise FetchError(f"too large: more than {max_bytes} bytes at {where}")
            chunks.append(chunk)
        return Fetched(
            url=str(response.url),
            status=response.status_code,
            headers=response.headers,
            content=b"".join(chunks),
            encoding=response.charset_encoding,
        )

    return consume


@contextmanager
def _http_errors(url: str | httpx.URL, timeouts: Mapping[str, Any]) -> Iterator[None]:
    """httpx's exceptions as ``FetchError``s: network trouble is retryable, a bad URL is not."""
    where = safe_url(url)
    try:
        yield
    except httpx.ConnectTimeout as exc:
        raise FetchError(
            f"timed out: no connection within {timeouts.get('connect')} s to {where}", retryable=True
        ) from exc
    except httpx.ReadTimeout as exc:
        raise FetchError(
            f"timed out: no data for {timeouts.get('read')} s from {where}", retryable=True
        ) from exc
    except httpx.TimeoutException as exc:
        raise FetchError(f"timed out: {type(exc).__name__} at {where}", retryable=True) from exc
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise FetchError(f"invalid URL: {where} ({redact(str(exc))})") from exc
    except httpx.TransportError as exc:
        detail = redact(str(exc)) or type(exc).__name__
        raise FetchError(f"connection failed: {where} ({detail})", retryable=True) from exc


def _status_error(response: httpx.Response, retry: FetchRetry) -> FetchError:
    status, where = response.status_code, safe_url(response.url)
    strategy = retry.strategy_for(status)
    if strategy is None:
        return FetchError(f"HTTP {status} from {where}", status=status)
    wait = wait_from_headers(response.headers) if strategy == "headers" else None
    if wait is None:
        return FetchError(f"HTTP {status} from {where}", retryable=True, status=status)
    message = f"HTTP {status} from {where} (retry after {wait:.1f} s)"
    return FetchError(message, retryable=True, status=status, retry_after=wait)


def _send_once(
    client: httpx.Client,
    request: httpx.Request,
    consume: Callable[[httpx.Response], T],
    retry: FetchRetry,
) -> T:
    """One attempt: send, follow redirects by hand (so a hop to another scheme gets a clear refusal),
    then hand a 2xx response to ``consume`` or turn the status into a ``FetchError``."""
    timeouts = request.extensions.get("timeout", {})
    first = request.url
    for _ in range(MAX_REDIRECTS + 1):
        with _http_errors(request.url, timeouts):
            response = client.send(request, stream=True)
        try:
            if response.next_request is None:
                if not 200 <= response.status_code < 300:
                    raise _status_error(response, retry)
                with _http_errors(response.url, timeouts):
                    return consume(response)
            request = response.next_request
            if request.url.scheme not in ("http", "https"):
                where, scheme = safe_url(response.url), request.url.scheme
                raise FetchError(f"refused: {where} redirects to scheme {scheme!r}")
        finally:
            response.close()
    raise FetchError(f"too many redirects: more than {MAX_REDIRECTS} from {safe_url(first)}")


def _worth_retrying(retry: FetchRetry) -> Callable[[BaseException], bool]:
    def check(error: BaseException) -> bool:
        if not isinstance(error, FetchError) or not error.retryable:
            return False
        return error.retry_after is None or error.retry_after <= retry.max_wait

    return check


def _wait(retry: FetchRetry) -> Callable[[tenacity.RetryCallState], float]:
    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, FetchError) and error.retry_after is not None:
            return error.retry_after
        return retry.policy.delay(state.attempt_number)

    return wait


def _log_retry(log: StepLog | None, url: str, retry: FetchRetry) -> Callable[[tenacity.RetryCallState], None]:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        if log is None:
            return
        error = state.outcome.exception() if state.outcome else None
        delay = state.upcoming_sleep
        log.warning(
            f"request attempt {state.attempt_number} of {retry.policy.max_attempts} failed, "
            f"retrying in {delay:.2f} s",
            {"url": safe_url(url), "error": str(error), "delay_s": round(delay, 3)},
        )

    return before_sleep


@overload
def fetch(
    client: httpx.Client,
    url: str,
    consume: None = None,
    *,
    method: str = ...,
    headers: Mapping[str, str] | None = ...,
    content: bytes | str | None = ...,
    timeout: float | httpx.Timeout | None = ...,
    retry: FetchRetry = ...,
    max_bytes: int = ...,
    log: StepLog | None = ...,
) -> Fetched: ...


@overload
def fetch(
    client: httpx.Client,
    url: str,
    consume: Callable[[httpx.Response], T],
    *,
    method: str = ...,
    headers: Mapping[str, str] | None = ...,
    content: bytes | str | None = ...,
    timeout: float | httpx.Timeout | None = ...,
    retry: FetchRetry = ...,
    max_bytes: int = ...,
    log: StepLog | None = ...,
) -> T: ...


def fetch(
    client: httpx.Client,
    url: str,
    consume: Callable[[httpx.Response], Any] | None = None,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    content: bytes | str | None = None,
    timeout: float | httpx.Timeout | None = None,
    retry: FetchRetry = DEFAULT_RETRY,
    max_bytes: int = DEFAULT_MAX_BYTES,
    log: StepLog | None = None,
) -> Any:
    """Send ``method url`` with ``client``, retried by ``retry``; ``FetchError`` once it cannot succeed.

    ``consume(response)`` reads a 2xx response (streamed) and its result is returned; it runs again on
    every attempt, so it must start over each time (the downloader writes a fresh partial file). Without
    it the body is read into a ``Fetched``, up to ``max_bytes``. ``timeout`` applies to each attempt
    (default: the client's). Each retry is logged to ``log`` with the attempt, the error and the delay.
    """
    read = consume or read_body(max_bytes)
    with _http_errors(url, {}):
        request = client.build_request(
            method,
            url,
            headers=headers,
            content=content,
            timeout=client.timeout if timeout is None else timeout,
        )
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(retry.policy.max_attempts),
        retry=tenacity.retry_if_exception(_worth_retrying(retry)),
        wait=_wait(retry),
        before_sleep=_log_retry(log, url, retry),
        reraise=True,
    )
    result = retrying(_send_once, client, request, read, retry)
    if consume is None:
        return replace(result, attempts=retrying.statistics.get("attempt_number", 1))
    return result


class HttpClient(dg.ConfigurableResource):
    """HTTP for jobs that call URLs from their payloads: ``fetch`` through the SSRF guard, with timeouts,
    a size cap and its own retry budget.

    ``allow_hosts`` lists hosts (``name`` or ``name:port``) that may be reached even on private or loopback
    addresses: internal services and tests.
    """

    allow_hosts: list[str] = []
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_bytes: int = DEFAULT_MAX_BYTES
    max_attempts: int = 3
    min_delay: float = 1.0
    max_delay: float = 30.0
    max_wait: float = 60.0

    def retry(self) -> FetchRetry:
        policy = RetryPolicy(
            max_attempts=self.max_attempts, min_delay=self.min_delay, max_delay=self.max_delay
        )
        return FetchRetry(policy=policy, max_wait=self.max_wait)

    def fetch(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        content: bytes | str | None = None,
        log: StepLog | None = None,
    ) -> Fetched:
        """``fetch`` with this resource's guard, timeouts, cap and retries; see ``offload.net.http.fetch``."""
        timeout = httpx.Timeout(self.read_timeout, connect=self.connect_timeout)
        with guarded_client(timeout=timeout, allow_hosts=self.allow_hosts) as client:
            return fetch(
                client,
                url,
                method=method,
                headers=headers,
                content=content,
                retry=self.retry(),
                max_bytes=self.max_bytes,
                log=log,
            )
