"""The one way offload fetches a user-supplied URL to a local file: ``Downloader.fetch``.

Every step that downloads (the video pipeline's download step first) goes through here, so the rules
live in one place: only http, https, file and s3 URLs; HTTP connections only to public addresses unless
a host is allow-listed (``offload.net.address_policy``, checked on every redirect hop); ``file://`` only
inside
configured roots; ``s3://`` only inside configured sources, per user (``s3_sources``); a size cap checked
against the declared length and again while streaming; transient failures retried, permanent ones raised
at once. The file appears at ``dest`` only when complete.

Failures are ``FetchError``s with one line that starts with the rule that failed ("refused: ...",
"too large: ...", "HTTP 404 from ..."); URLs in them lose their userinfo and query string, because
presigned URLs carry their credentials there. Callers add the payload field, e.g. ``video_url: ...``.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import unquote, urlsplit

import dagster as dg
import httpx

from offload.errors import FetchError, retryable_status
from offload.log import StepLog, redact
from offload.net.address_policy import guarded_client
from offload.net.http import FetchRetry, fetch, safe_url
from offload.retry import RetryPolicy

if TYPE_CHECKING:
    import botocore.exceptions

SCHEMES = ("http", "https", "file", "s3")
CHUNK_BYTES = 1024 * 1024

Progress = Callable[[int, int | None], None]
"""``on_progress(bytes_written, total_bytes_or_None)``, called after every chunk."""


S3_REFUSED = "not found or not allowed"
"""The one answer for an s3:// source that is outside the allowed sources, missing, or forbidden: a
caller must not learn from the error whether some object exists."""
USER_PLACEHOLDER = "{user_id}"


def scheme_error(url: str, schemes: Sequence[str] = SCHEMES) -> str | None:
    """Why ``url``'s scheme is refused, or None; lets payload validation refuse it before any run."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in schemes:
        return None
    if not scheme:
        return f"no scheme: expected an {_or(f'{s}://' for s in schemes)} URL"
    return f"scheme {scheme!r} is not allowed; use {_or(schemes)}"


def _or(items: Iterator[str] | Sequence[str]) -> str:
    words = list(items)
    head = ", ".join(words[:-1])
    return f"{head} or {words[-1]}" if head else words[-1]


def s3_source_allowed(bucket: str, key: str, sources: Sequence[str], user_id: str | None) -> bool:
    """Whether ``s3://bucket/key`` lies inside one of ``sources``.

    A source is ``bucket/prefix`` (``uploads-bucket/uploads/{user_id}/``); ``{user_id}`` is replaced by the
    payload's own ``user_id``, so a user reads only their own uploads. A source with ``{user_id}`` admits
    nothing when the caller names no user. Keys with ``.``, ``..`` or empty path segments are refused:
    some S3-compatible servers and proxies normalise them into another key.
    """
    segments = key.split("/")
    if any(segment in ("", ".", "..") for segment in segments[:-1]) or segments[-1] in ("", ".", ".."):
        return False
    for source in sources:
        if USER_PLACEHOLDER in source:
            if not user_id or "/" in user_id or user_id in (".", ".."):
                continue
            source = source.replace(USER_PLACEHOLDER, user_id)
        source_bucket, _, prefix = source.partition("/")
        if source_bucket == bucket and key.startswith(prefix):
            return True
    return False


class Downloader(dg.ConfigurableResource):
    """Downloads http(s), file and s3 URLs to local files, refusing what could be an SSRF or a bomb.

    ``allow_hosts`` lists hosts (``name`` or ``name:port``) that HTTP may reach even on private or
    loopback addresses: internal sources and tests. ``file_roots`` lists the directories ``file://`` URLs
    may read; empty means ``file://`` is refused. ``s3_sources`` lists the ``bucket/prefix`` places
    ``s3://`` URLs may read, ``{user_id}`` standing for the payload's user (``s3_source_allowed``); empty
    means ``s3://`` is refused: the worker's credentials read far more than any one user's uploads.
    ``s3://bucket/key`` uses the standard boto3 configuration (credentials chain, ``AWS_ENDPOINT_URL_S3``).
    """

    max_bytes: int = 2 * 1024**3
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    attempts: int = 3
    retry_base_delay: float = 1.0
    allow_hosts: list[str] = []
    file_roots: list[str] = []
    s3_sources: list[str] = []

    def fetch(
        self,
        url: str,
        dest: Path,
        on_progress: Progress | None = None,
        log: StepLog | None = None,
        *,
        user_id: str | None = None,
        schemes: Sequence[str] = SCHEMES,
    ) -> int:
        """Stream ``url`` into ``dest`` and return the bytes written; ``FetchError`` if it cannot.

        http(s) goes through ``offload.net.http.fetch``, the one HTTP retry loop: transient failures
        (connection errors, timeouts, HTTP 408/409/5xx, and 429 after the wait its headers ask for) are
        tried again up to ``attempts`` times in all, backing off from ``retry_base_delay``; each attempt
        starts the file over, and each retry is logged to ``log``. s3 reads use botocore's own retries
        with the same number of attempts. Anything else fails on the first attempt.

        ``user_id`` is the payload's user, for the ``{user_id}`` of ``s3_sources``. ``schemes`` narrows
        the schemes this fetch accepts (a URL that a server sent, not a user: ``("https", "http")``).
        """
        problem = scheme_error(url, [scheme for scheme in schemes if scheme in SCHEMES])
        if problem is not None:
            raise FetchError(problem)
        dest = Path(dest)
        scheme = urlsplit(url).scheme.lower()
        if scheme in ("http", "https"):
            return self._fetch_http(url, dest, on_progress, log)
        if scheme == "s3":
            bucket, key = _s3_location(url)
            where = f"s3://{bucket}/{key}"
            if not s3_source_allowed(bucket, key, self.s3_sources, user_id):
                raise FetchError(f"{S3_REFUSED}: {where}")
        with _partial_file(dest) as out:
            sink = _Sink(out, self.max_bytes, safe_url(url), on_progress)
            if scheme == "file":
                self._read_file(url, sink)
            else:
                self._read_s3(bucket, key, sink)
        return sink.written

    # -- http and https ------------------------------------------------------------------------------

    def _retry(self) -> FetchRetry:
        # No jitter: the downloader's waits are the plain exponential series its settings describe.
        policy = RetryPolicy(
            max_attempts=max(1, self.attempts),
            min_delay=self.retry_base_delay,
            max_delay=max(60.0, self.retry_base_delay),
            randomize=False,
        )
        return FetchRetry(policy=policy)

    def _fetch_http(self, url: str, dest: Path, on_progress: Progress | None, log: StepLog | None) -> int:
        """The address of every connection (each redirect hop too) is checked by the guarded client."""

        def into_file(response: httpx.Response) -> int:
            with _partial_file(dest) as out:
                sink = _Sink(out, self.max_bytes, safe_url(response.url), on_progress)
                total = None
                if response.headers.get("Content-Encoding", "identity").lower() == "identity":
                    total = _int_or_none(response.headers.get("Content-Length"))
                sink.start(total)
                # Chunks as they arrive (httpcore reads at most 64 KiB at a time), not re-buffered by httpx.
                for chunk in response.iter_bytes():
                    sink.write(chunk)
            return sink.written

        timeout = httpx.Timeout(self.read_timeout, connect=self.connect_timeout)
        with guarded_client(timeout=timeout, allow_hosts=self.allow_hosts) as client:
            # Identity: the cap and the progress total then count the bytes of the file itself.
            return fetch(
                client, url, into_file, headers={"Accept-Encoding": "identity"}, retry=self._retry(), log=log
            )

    # -- file ----------------------------------------------------------------------------------------

    def _read_file(self, url: str, sink: _Sink) -> None:
        """Read a local file only if, with symlinks and ``..`` resolved, it lies inside a file root."""
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise FetchError(f"refused: file URLs must name a local path (file:///...), not {parts.netloc}")
        if not self.file_roots:
            raise FetchError("refused: file URLs are not enabled here (no file_roots configured)")
        requested = unquote(parts.path)
        if "\0" in requested or not Path(requested).is_absolute():
            raise FetchError(f"refused: {requested!r} is not an absolute path")
        try:
            path = Path(requested).resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise FetchError(f"refused: {requested} does not resolve ({exc})") from exc
        if not any(path.is_relative_to(Path(root).resolve()) for root in self.file_roots):
            raise FetchError(f"refused: {requested} is outside the allowed file roots")
        try:
            # A FIFO or a device would block open() (a FIFO until a writer comes: forever) or read();
            # refused before opening. The resolved path has no symlinks; O_NOFOLLOW keeps a link swapped
            # in since then from being followed, and O_NONBLOCK keeps a FIFO swapped in from blocking the
            # open (fstat below refuses it). Parent directories swapped in that instant are not covered.
            if not stat.S_ISREG(os.stat(path).st_mode):
                raise FetchError(f"not a file: {requested}")
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError as exc:
            raise FetchError(f"not found: {requested}") from exc
        except OSError as exc:
            raise FetchError(f"unreadable: {requested} ({exc.strerror})") from exc
        with os.fdopen(fd, "rb") as source:
            info = os.fstat(source.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise FetchError(f"not a file: {requested}")
            # Regular files never block; clear the flag so reads behave as usual.
            os.set_blocking(fd, True)
            sink.start(info.st_size)
            while chunk := source.read(CHUNK_BYTES):
                sink.write(chunk)

    # -- s3 ------------------------------------------------------------------------------------------

    def _read_s3(self, bucket: str, key: str, sink: _Sink) -> None:
        where = f"s3://{bucket}/{key}"
        # Imported here: boto3 takes half a second to import, and most runs never read from S3.
        import boto3
        import botocore.config
        import botocore.exceptions

        # botocore retries a request that fails (throttling, 5xx, connection errors) itself, with backoff;
        # a failure while the body streams is reported retryable, for the step's retry policy.
        config = botocore.config.Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"total_max_attempts": max(1, self.attempts), "mode": "standard"},
        )
        try:
            client = boto3.client("s3", config=config)
            response: Any = client.get_object(Bucket=bucket, Key=key)
            sink.start(response.get("ContentLength"))
            for chunk in response["Body"].iter_chunks(CHUNK_BYTES):
                sink.write(chunk)
        except botocore.exceptions.ClientError as exc:
            raise _s3_client_error(exc, where) from exc
        except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as exc:
            raise FetchError(f"connection failed: {where} ({type(exc).__name__})", retryable=True) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise FetchError(f"S3 error: {where} ({redact(str(exc))})") from exc


def _s3_location(url: str) -> tuple[str, str]:
    # Keys are taken literally, as the AWS CLI does: '?', '#' and '%' are legal in a key.
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket or not key:
        raise FetchError("invalid URL: expected s3://bucket/key")
    return bucket, key


def _s3_client_error(exc: botocore.exceptions.ClientError, where: str) -> FetchError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    if code in ("NoSuchKey", "NoSuchBucket", "404", "NotFound", "AccessDenied", "403", "Forbidden"):
        return FetchError(f"{S3_REFUSED}: {where}")  # the same line as a source outside s3_sources
    retryable = retryable_status(status) or code in ("SlowDown", "RequestTimeout")
    return FetchError(f"S3 {code} (HTTP {status}) for {where}", retryable=retryable)


class _Sink:
    """Where the bytes of one attempt go: the partial file, the size cap and the progress callback."""

    def __init__(self, out: BinaryIO, max_bytes: int, where: str, on_progress: Progress | None):
        self._out, self._max, self._where, self._on_progress = out, max_bytes, where, on_progress
        self.written = 0
        self.total: int | None = None

    def start(self, total: int | None) -> None:
        """Refuse before reading anything if the source declares more than the cap."""
        if total is not None and total > self._max:
            raise FetchError(f"too large: more than {self._max} bytes ({total} declared) at {self._where}")
        self.total = total

    def write(self, chunk: bytes) -> None:
        """Refuse as soon as the bytes actually received pass the cap: declared lengths can lie."""
        if self.written + len(chunk) > self._max:
            raise FetchError(f"too large: more than {self._max} bytes at {self._where}")
        self._out.write(chunk)
        self.written += len(chunk)
        if self._on_progress is not None:
            self._on_progress(self.written, self.total)


@contextmanager
def _partial_file(dest: Path) -> Iterator[BinaryIO]:
    """A hidden temporary file beside ``dest``, renamed onto it on success and removed on failure.

    Beside, not in /tmp: the rename must stay on one file system to be atomic, so a reader never sees
    half a file under the final name.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.replace(temp_name, dest)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
