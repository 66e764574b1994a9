"""``Downloader.fetch`` end to end: HTTP against real servers on loopback (allow list, loopback and
redirect refusals, size caps, retries and Retry-After, timeouts, redacted messages), file:// roots,
s3:// against moto, refused schemes, and, inside a network namespace with nothing but loopback, that
private and metadata addresses are refused before any connection while a public address gets past the
guard.

No test sends a packet beyond 127.0.0.1 and ::1: anything aimed at another address runs in the namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from benchmarks.support.http_server import LocalHTTPServer, body, chunked, hang, redirect, sequence, statuses
from benchmarks.support.waiting import wait_for
from offload.errors import FetchError
from offload.net.download import Downloader, safe_url, scheme_error
from tests.support.moto_s3 import moto_s3_endpoint

PAYLOAD = os.urandom(300_000)  # larger than one read, so streaming and progress see several chunks


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.fixture
def server() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer({"/clip.mp4": body(PAYLOAD)}) as running:
        yield running


def downloader_for(server: LocalHTTPServer, **settings: Any) -> Downloader:
    """A downloader that may reach ``server`` (and only it) with fast retries."""
    return Downloader(**{"allow_hosts": [server.origin], "retry_base_delay": 0.01, **settings})


# --- http: the allow list and the address guard -------------------------------------------------------------


def test_allowed_local_server_downloads_with_progress(server: LocalHTTPServer, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "clip.mp4"
    progress: list[tuple[int, int | None]] = []
    written = downloader_for(server).fetch(
        server.url("/clip.mp4"), dest, lambda n, t: progress.append((n, t))
    )
    assert written == len(PAYLOAD)
    assert dest.read_bytes() == PAYLOAD
    assert progress[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [n for n, _ in progress] == sorted(n for n, _ in progress)
    assert leftovers(dest.parent) == ["clip.mp4"]  # the temporary name is gone


def test_loopback_is_refused_without_allow_list_and_never_contacted(
    server: LocalHTTPServer, tmp_path: Path
) -> None:
    with pytest.raises(FetchError) as caught:
        Downloader().fetch(server.url("/clip.mp4"), tmp_path / "clip.mp4")
    assert str(caught.value) == "refused: 127.0.0.1 is a loopback address"
    assert not caught.value.retryable
    assert server.request_count == 0
    assert leftovers(tmp_path) == []


def test_allow_list_entry_for_another_port_does_not_admit_this_one(
    server: LocalHTTPServer, tmp_path: Path
) -> None:
    other = Downloader(allow_hosts=[f"127.0.0.1:{server.port + 1}"])
    with pytest.raises(FetchError, match=r"^refused: 127\.0\.0\.1 is a loopback address$"):
        other.fetch(server.url("/clip.mp4"), tmp_path / "clip.mp4")
    assert server.request_count == 0


def test_ipv6_loopback_is_refused_and_never_contacted(tmp_path: Path) -> None:
    with LocalHTTPServer({"/clip.mp4": body(PAYLOAD)}, host="::1") as server6:
        with pytest.raises(FetchError, match=r"^refused: ::1 is a loopback address$"):
            Downloader().fetch(server6.url("/clip.mp4"), tmp_path / "clip.mp4")
        assert server6.request_count == 0
        # The same server is reachable once listed, so the refusal above was the guard's doing.
        assert Downloader(allow_hosts=[server6.origin]).fetch(server6.url("/clip.mp4"), tmp_path / "ok") > 0


def test_redirect_to_a_loopback_port_not_allowed_is_refused(server: LocalHTTPServer, tmp_path: Path) -> None:
    with LocalHTTPServer({"/secret": body(b"internal")}) as internal:
        server.routes["/go"] = redirect(internal.url("/secret"))
        with pytest.raises(FetchError, match=r"^refused: 127\.0\.0\.1 is a loopback address$"):
            downloader_for(server).fetch(server.url("/go"), tmp_path / "clip.mp4")
        assert server.paths == ["/go"]
        assert internal.request_count == 0
    assert leftovers(tmp_path) == []


def test_redirects_within_the_allowed_server_are_followed(server: LocalHTTPServer, tmp_path: Path) -> None:
    server.routes["/a"] = redirect("/b", status=301)
    server.routes["/b"] = redirect(server.url("/clip.mp4"), status=307)
    assert downloader_for(server).fetch(server.url("/a"), tmp_path / "clip.mp4") == len(PAYLOAD)
    assert server.paths == ["/a", "/b", "/clip.mp4"]


def test_redirect_to_another_scheme_is_refused(server: LocalHTTPServer, tmp_path: Path) -> None:
    server.routes["/to-file"] = redirect("file:///etc/passwd")
    with pytest.raises(FetchError, match=r"redirects to scheme 'file'"):
        downloader_for(server, file_roots=["/"]).fetch(server.url("/to-file"), tmp_path / "x")


def test_more_than_five_redirects_fail(server: LocalHTTPServer, tmp_path: Path) -> None:
    server.routes["/loop"] = redirect("/loop")
    with pytest.raises(FetchError, match=r"^too many redirects: more than 5") as caught:
        downloader_for(server).fetch(server.url("/loop"), tmp_path / "x")
    assert not caught.value.retryable
    assert server.request_count == 6  # the first request and five hops


# --- http: size caps ----------------------------------------------------------------------------------------


def test_too_large_by_content_length_is_refused_before_the_body(
    server: LocalHTTPServer, tmp_path: Path
) -> None:
    with pytest.raises(FetchError) as caught:
        downloader_for(server, max_bytes=1000).fetch(server.url("/clip.mp4"), tmp_path / "clip.mp4")
    assert str(caught.value).startswith(f"too large: more than 1000 bytes ({len(PAYLOAD)} declared)")
    assert not caught.value.retryable
    assert leftovers(tmp_path) == []


def test_too_large_while_streaming_without_length_is_refused(server: LocalHTTPServer, tmp_path: Path) -> None:
    server.routes["/endless"] = chunked([b"x" * 400] * 10)
    seen: list[int] = []
    with pytest.raises(FetchError, match=r"^too large: more than 1000 bytes at http://127\.0\.0\.1"):
        downloader_for(server, max_bytes=1000).fetch(
            server.url("/endless"), tmp_path / "clip.mp4", lambda n, _: seen.append(n)
        )
    assert all(n <= 1000 for n in seen)  # progress never reported bytes past the cap
    assert leftovers(tmp_path) == []


def test_a_body_exactly_at_the_cap_is_accepted(server: LocalHTTPServer, tmp_path: Path) -> None:
    server.routes["/exact"] = chunked([b"y" * 500, b"y" * 500])
    assert downloader_for(server, max_bytes=1000).fetch(server.url("/exact"), tmp_path / "e") == 1000


# --- http: retries and timeouts -----------------------------------------------------------------------------


def test_transient_statuses_are_retried_until_success(server: LocalHTTPServer, tmp_path: Path) -> None:
    server.routes["/flaky"] = statuses(503, 503, then=body(PAYLOAD))
    assert downloader_for(server, attempts=3).fetch(server.url("/flaky"), tmp_path / "f") == len(PAYLOAD)
    assert server.paths == ["/flaky"] * 3


def test_transient_statuses_fail_retryable_when_attempts_run_out(
    server: LocalHTTPServer, tmp_path: Path
) -> None:
    server.routes["/down"] = statuses(503, 429, 408, then=body(PAYLOAD))
    with pytest.raises(FetchError, match=r"^HTTP 408 from ") as caught:
        downloader_for(server, attempts=3).fetch(server.url("/down"), tmp_path / "f")
    assert caught.value.retryable
    assert server.request_count == 3
    assert leftovers(tmp_path) == []


def test_rate_limited_source_is_retried_after_its_retry_after(
    server: LocalHTTPServer, tmp_path: Path
) -> None:
    """The downloader's HTTP goes through offload.net.http.fetch: a 429 waits as long as the server asks."""
    server.routes["/busy"] = sequence(body(b"", 429, {"Retry-After": "1"}), body(PAYLOAD))
    assert downloader_for(server).fetch(server.url("/busy"), tmp_path / "f") == len(PAYLOAD)
    assert server.paths == ["/busy", "/busy"]
    assert server.times[1] - server.times[0] >= 1.0  # retry_base_delay alone would wait 0.01 s


def test_not_found_fails_at_once(server: LocalHTTPServer, tmp_path: Path) -> None:
    with pytest.raises(FetchError) as caught:
        downloader_for(server).fetch(server.url("/missing"), tmp_path / "f")
    assert str(caught.value) == f"HTTP 404 from http://{server.origin}/missing"
    assert not caught.value.retryable
    assert server.request_count == 1


def test_a_hanging_server_times_out_retryable(server: LocalHTTPServer, tmp_path: Path) -> None:
    server.routes["/hang"] = hang
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"^timed out: no data for 0.3 s from ") as caught:
        downloader_for(server, read_timeout=0.3, attempts=2).fetch(server.url("/hang"), tmp_path / "f")
    assert caught.value.retryable
    assert time.monotonic() - started < 10
    wait_for(lambda: server.request_count == 2, 5, "both attempts reached the server", interval=0.02)
    assert leftovers(tmp_path) == []


def test_messages_never_carry_passwords_or_query_strings(server: LocalHTTPServer, tmp_path: Path) -> None:
    url = f"http://alice:hunter2secret@{server.origin}/missing?X-Amz-Signature=deadbeef&token=t0k3n#frag"
    with pytest.raises(FetchError) as caught:
        downloader_for(server).fetch(url, tmp_path / "f")
    message = str(caught.value)
    assert message == f"HTTP 404 from http://{server.origin}/missing"
    for secret in ("alice", "hunter2secret", "X-Amz", "deadbeef", "t0k3n", "frag"):
        assert secret not in message


def test_safe_url_strips_userinfo_query_and_fragment() -> None:
    assert safe_url("https://u:p@cdn.test:8443/a/b.mp4?sig=1#x") == "https://cdn.test:8443/a/b.mp4"
    assert safe_url("http://[::1]:80/x?y") == "http://[::1]:80/x"


# --- file:// ------------------------------------------------------------------------------------------------


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    inside, outside = tmp_path / "root", tmp_path / "outside"
    (inside / "sub").mkdir(parents=True)
    outside.mkdir()
    (inside / "sub" / "clip one.mp4").write_bytes(PAYLOAD)
    (outside / "secret.txt").write_bytes(b"secret")
    (inside / "link.mp4").symlink_to(outside / "secret.txt")
    return {"inside": inside, "outside": outside, "dest": tmp_path / "dest"}


def test_file_inside_a_root_is_copied(roots: dict[str, Path]) -> None:
    url = (roots["inside"] / "sub" / "clip one.mp4").as_uri()  # percent-encodes the space
    dest = roots["dest"] / "clip.mp4"
    assert Downloader(file_roots=[str(roots["inside"])]).fetch(url, dest) == len(PAYLOAD)
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize(
    "make_url",
    [
        pytest.param(lambda r: (r["outside"] / "secret.txt").as_uri(), id="outside"),
        pytest.param(lambda r: f"file://{r['inside']}/sub/../../outside/secret.txt", id="dotdot-escape"),
        pytest.param(lambda r: (r["inside"] / "link.mp4").as_uri(), id="symlink-out"),
    ],
)
def test_file_outside_the_roots_is_refused(roots: dict[str, Path], make_url: Callable[[Any], str]) -> None:
    with pytest.raises(FetchError, match=r"^refused: .* is outside the allowed file roots$") as caught:
        Downloader(file_roots=[str(roots["inside"])]).fetch(make_url(roots), roots["dest"] / "x")
    assert not caught.value.retryable
    assert leftovers(roots["dest"]) == []


def test_file_urls_are_refused_without_roots(roots: dict[str, Path]) -> None:
    with pytest.raises(FetchError, match=r"^refused: file URLs are not enabled"):
        Downloader().fetch((roots["inside"] / "sub" / "clip one.mp4").as_uri(), roots["dest"] / "x")


def test_file_on_another_host_and_missing_file_are_refused(roots: dict[str, Path]) -> None:
    downloader = Downloader(file_roots=[str(roots["inside"])])
    with pytest.raises(FetchError, match=r"^refused: file URLs must name a local path"):
        downloader.fetch(f"file://fileserver{roots['inside']}/sub/clip%20one.mp4", roots["dest"] / "x")
    with pytest.raises(FetchError, match=r"^not found: "):
        downloader.fetch((roots["inside"] / "nope.mp4").as_uri(), roots["dest"] / "x")


def test_file_size_cap_applies(roots: dict[str, Path]) -> None:
    downloader = Downloader(file_roots=[str(roots["inside"])], max_bytes=1000)
    with pytest.raises(FetchError, match=r"^too large: more than 1000 bytes"):
        downloader.fetch((roots["inside"] / "sub" / "clip one.mp4").as_uri(), roots["dest"] / "x")
    assert leftovers(roots["dest"]) == []


def test_a_fifo_inside_a_root_is_refused_without_blocking(roots: dict[str, Path]) -> None:
    """Opening a FIFO for reading waits for a writer: forever, unless the downloader refuses it first."""
    fifo = roots["inside"] / "pipe.mp4"
    os.mkfifo(fifo)
    outcome: list[BaseException | int] = []

    def fetch() -> None:
        try:
            outcome.append(
                Downloader(file_roots=[str(roots["inside"])]).fetch(fifo.as_uri(), roots["dest"] / "x")
            )
        except BaseException as error:
            outcome.append(error)

    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive():  # blocked in open(): a writer releases it, then the test fails
        with open(fifo, "wb"):
            pass
        worker.join(timeout=60)
        pytest.fail("fetching a FIFO blocked until a writer opened it")
    assert len(outcome) == 1 and isinstance(outcome[0], FetchError), outcome
    assert str(outcome[0]) == f"not a file: {fifo}"
    assert leftovers(roots["dest"]) == []


# --- other schemes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://files.test/clip.mp4", "scheme 'ftp' is not allowed; use http, https, file or s3"),
        ("gopher://127.0.0.1:70/_x", "scheme 'gopher' is not allowed; use http, https, file or s3"),
        ("/etc/passwd", "no scheme: expected an http://, https://, file:// or s3:// URL"),
    ],
)
def test_other_schemes_are_refused(url: str, message: str, tmp_path: Path) -> None:
    assert scheme_error(url) == message
    with pytest.raises(FetchError) as caught:
        Downloader().fetch(url, tmp_path / "x")
    assert str(caught.value) == message
    assert not caught.value.retryable


# --- s3:// against moto -------------------------------------------------------------------------------------


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A bucket on moto's server, reached through the standard boto3 configuration (env variables)."""
    with moto_s3_endpoint() as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask 169.254.169.254
        monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "HTTP_PROXY", "HTTPS_PROXY"):
            monkeypatch.delenv(name, raising=False)
        s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(signature_version="s3v4"))
        name = f"offload-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=name)
        s3.put_object(Bucket=name, Key="uploads/ada/clip one.mp4", Body=PAYLOAD)
        yield name


def s3_downloader(bucket: str, **settings: Any) -> Downloader:
    """The downloader as a deployment sets it up: each user reads their own upload folder of ``bucket``."""
    return Downloader(s3_sources=[f"{bucket}/uploads/{{user_id}}/"], **settings)


def test_s3_object_is_streamed(s3_bucket: str, tmp_path: Path) -> None:
    progress: list[tuple[int, int | None]] = []
    dest = tmp_path / "clip.mp4"
    written = s3_downloader(s3_bucket).fetch(
        f"s3://{s3_bucket}/uploads/ada/clip one.mp4", dest, lambda *p: progress.append(p), user_id="ada"
    )
    assert written == len(PAYLOAD)
    assert dest.read_bytes() == PAYLOAD
    assert progress[-1] == (len(PAYLOAD), len(PAYLOAD))


def test_s3_missing_key_and_size_cap(s3_bucket: str, tmp_path: Path) -> None:
    with pytest.raises(
        FetchError, match=f"^not found or not allowed: s3://{s3_bucket}/uploads/ada/nope.mp4$"
    ) as caught:
        s3_downloader(s3_bucket).fetch(
            f"s3://{s3_bucket}/uploads/ada/nope.mp4", tmp_path / "x", user_id="ada"
        )
    assert not caught.value.retryable
    with pytest.raises(FetchError, match=r"^too large: more than 1000 bytes"):
        s3_downloader(s3_bucket, max_bytes=1000).fetch(
            f"s3://{s3_bucket}/uploads/ada/clip one.mp4", tmp_path / "x", user_id="ada"
        )
    assert leftovers(tmp_path) == []


def test_s3_reads_only_the_configured_sources_of_the_payloads_own_user(
    s3_bucket: str, tmp_path: Path
) -> None:
    """The worker's credentials read every object; a payload may name only its own user's uploads. A
    refusal reads exactly like a missing object, so the error tells nothing about what exists."""
    s3 = boto3.client("s3", config=Config(signature_version="s3v4"))
    other = f"offload-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=other)
    s3.put_object(Bucket=other, Key="uploads/ada/clip one.mp4", Body=PAYLOAD)
    s3.put_object(Bucket=s3_bucket, Key="videos/ada/private.mp4", Body=PAYLOAD)
    downloader = s3_downloader(s3_bucket)
    refused = [
        (f"s3://{s3_bucket}/uploads/ada/clip one.mp4", "mallory"),  # another user's upload
        (f"s3://{s3_bucket}/uploads/ada/clip one.mp4", None),  # no user named
        (f"s3://{s3_bucket}/videos/ada/private.mp4", "ada"),  # outside the upload folder
        (f"s3://{s3_bucket}/uploads/mallory/../ada/clip one.mp4", "mallory"),  # dot segments
        (f"s3://{s3_bucket}/uploads/mallory//clip one.mp4", "mallory"),  # empty segment
        (f"s3://{other}/uploads/ada/clip one.mp4", "ada"),  # an unrelated bucket
        (f"s3://{s3_bucket}/uploads/ada/missing.mp4", "ada"),  # allowed but missing: the same answer
    ]
    for url, user in refused:
        with pytest.raises(FetchError) as caught:
            downloader.fetch(url, tmp_path / "x", user_id=user)
        assert str(caught.value) == f"not found or not allowed: {url}", user
        assert not caught.value.retryable
    # No sources configured (the default, and production's unless OFFLOAD_S3_SOURCES is set): none at all.
    with pytest.raises(FetchError, match=r"^not found or not allowed: "):
        Downloader().fetch(f"s3://{s3_bucket}/uploads/ada/clip one.mp4", tmp_path / "x", user_id="ada")
    assert leftovers(tmp_path) == []
    assert downloader.fetch(f"s3://{s3_bucket}/uploads/ada/clip one.mp4", tmp_path / "ok", user_id="ada") > 0


def test_s3_url_without_key_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"^invalid URL: expected s3://bucket/key$"):
        Downloader().fetch("s3://just-a-bucket", tmp_path / "x")


# --- private and public addresses, inside a network namespace with only loopback ----------------------------

NAMESPACE_SCRIPT = textwrap.dedent(
    """
    import json, sys, tempfile
    from pathlib import Path
    from offload.net.download import Downloader
    from offload.errors import FetchError
    from benchmarks.support.http_server import LocalHTTPServer, redirect

    results = {}
    dest = Path(tempfile.mkdtemp()) / "x"

    def attempt(name, url, **settings):
        try:
            Downloader(retry_base_delay=0.01, attempts=1, connect_timeout=2, **settings).fetch(url, dest)
            results[name] = {"ok": True}
        except FetchError as error:
            results[name] = {"message": str(error), "retryable": error.retryable}

    attempt("private", "http://10.1.2.3/x")
    attempt("metadata", "http://169.254.169.254/latest/meta-data/")
    attempt("cgnat", "http://100.64.0.1/x")
    attempt("ula", "http://[fd00::1]/x")
    attempt("mapped", "http://[::ffff:192.168.0.1]/x")
    attempt("public", "http://93.184.216.34/x")
    with LocalHTTPServer({"/go": redirect("http://10.1.2.3/admin")}) as server:
        attempt("redirect", server.url("/go"), allow_hosts=[server.origin])
        results["redirect_requests"] = server.paths
    json.dump(results, sys.stdout)
    """
)


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -n` (root or user namespaces)")
def test_private_and_metadata_addresses_are_refused_before_connecting_in_a_sealed_namespace() -> None:
    """In a fresh network namespace only loopback exists, so whatever the guard let through could not
    leave the machine; a refusal message (not a connection error) proves the check came first."""
    root = Path(__file__).resolve().parents[1]
    command = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" -c "$1"', sys.executable]
    done = subprocess.run(
        [*command, NAMESPACE_SCRIPT], cwd=root, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results["private"] == {"message": "refused: 10.1.2.3 is a private address", "retryable": False}
    assert results["metadata"]["message"] == "refused: 169.254.169.254 is the cloud metadata address"
    assert results["cgnat"]["message"] == "refused: 100.64.0.1 is a shared (CGNAT) address"
    assert results["ula"]["message"] == "refused: fd00::1 is a unique local (private) address"
    assert results["mapped"]["message"].startswith("refused: ::ffff:192.168.0.1 is a private address")
    assert results["redirect"]["message"] == "refused: 10.1.2.3 is a private address"
    assert results["redirect_requests"] == ["/go"]
    # A public address passes the guard and fails only at the socket: the namespace has no route out.
    assert results["public"]["message"].startswith("connection failed: http://93.184.216.34/x")
    assert results["public"]["retryable"] is True
