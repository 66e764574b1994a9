"""Storage resources: ``check_key``'s rules, ``LocalStorage`` on a temp directory, and ``S3Storage`` against
moto's S3 server over real HTTP on 127.0.0.1 (small and multipart uploads, presigned URLs, the key prefix,
exists/delete/list_keys, list_objects with sizes and times). Every request goes to loopback; AWS is never
contacted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import boto3
import httpx
import pytest
from botocore.config import Config

from benchmarks.support.waiting import wait_for
from resources.storage import MAX_KEY_BYTES, LocalStorage, S3Storage, check_key
from tests.support.moto_s3 import moto_s3_endpoint

MiB = 1024 * 1024


def write_random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path`` in 1 MiB chunks; return their sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(left, MiB))
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- check_key -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "rule"),
    [
        ("", "must not be empty"),
        ("/abs/key", "must be relative"),
        ("a/../b", "'..' segments"),
        ("..", "'..' segments"),
        ("a/./b", "'.' or '..' segments"),
        ("a//b", "empty segments"),
        ("a/", "empty segments"),
        ("a\x00b", "NUL"),
        ("a\\b", "backslash"),
        ("k" * (MAX_KEY_BYTES + 1), "at most 1024 bytes"),
        ("é" * 513, "at most 1024 bytes"),  # 513 characters, but 1,026 bytes in UTF-8
    ],
    ids=["empty", "absolute", "dotdot", "only-dotdot", "dot", "double-slash", "trailing-slash", "nul",
         "backslash", "too-long", "too-long-utf8"],
)  # fmt: skip
def test_check_key_refuses_unsafe_keys_naming_field_and_rule(key: str, rule: str) -> None:
    with pytest.raises(ValueError) as raised:
        check_key(key)
    message = str(raised.value)
    assert message.startswith("storage key: ")
    assert rule in message


@pytest.mark.parametrize("key", ["videos/u1/v1.mp4", "a", "a/.hidden", "a/b..c", "k" * MAX_KEY_BYTES])
def test_check_key_accepts_ordinary_keys(key: str) -> None:
    assert check_key(key) == key


# --- LocalStorage ----------------------------------------------------------------------------------------


def test_local_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "store"
    storage = LocalStorage(root=str(root))
    source = tmp_path / "source.bin"
    checksum = write_random_file(source, 300_000)

    assert list(storage.list_keys()) == []  # the root does not exist yet
    stored = storage.put_file("videos/u1/v1.mp4", source, "video/mp4")
    storage.put_file("videos/u1/v2.mp4", source, "video/mp4")
    storage.put_file("thumbnails/u1/v1.jpg", source, "image/jpeg")

    assert stored.key == "videos/u1/v1.mp4"
    assert stored.size == 300_000
    assert (stored.path, stored.expires_at) == (str(root.resolve() / "videos/u1/v1.mp4"), None)
    url = storage.url("videos/u1/v1.mp4")
    assert stored.url == url
    parsed = urlparse(url)
    assert parsed.scheme == "file"
    assert Path(url2pathname(parsed.path)) == root.resolve() / "videos/u1/v1.mp4"

    dest = tmp_path / "back.bin"
    assert storage.get_file("videos/u1/v1.mp4", dest) == dest
    assert sha256_of(dest) == checksum

    assert storage.exists("videos/u1/v1.mp4")
    assert not storage.exists("videos/u1/missing.mp4")
    assert list(storage.list_keys()) == ["thumbnails/u1/v1.jpg", "videos/u1/v1.mp4", "videos/u1/v2.mp4"]
    assert list(storage.list_keys("videos/")) == ["videos/u1/v1.mp4", "videos/u1/v2.mp4"]
    listed = list(storage.list_objects("videos/"))
    assert [(o.key, o.size) for o in listed] == [("videos/u1/v1.mp4", 300_000), ("videos/u1/v2.mp4", 300_000)]
    assert all(abs((dt.datetime.now(dt.UTC) - o.modified).total_seconds()) < 300 for o in listed)

    storage.delete("videos/u1/v1.mp4")
    storage.delete("videos/u1/v1.mp4")  # deleting twice is fine: a retried cleanup
    assert not storage.exists("videos/u1/v1.mp4")
    assert list(storage.list_keys("videos/")) == ["videos/u1/v2.mp4"]
    with pytest.raises(FileNotFoundError):
        storage.get_file("videos/u1/v1.mp4", tmp_path / "gone.bin")
    assert not list(root.rglob("*.partial")), "a write left its partial file behind"


def test_local_overwrite_replaces_content(tmp_path: Path) -> None:
    storage = LocalStorage(root=str(tmp_path / "store"))
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("first")
    second.write_text("second, longer")
    storage.put_file("notes/a.txt", first, "text/plain")
    stored = storage.put_file("notes/a.txt", second, "text/plain")
    assert stored.size == len("second, longer")
    storage.get_file("notes/a.txt", tmp_path / "back.txt")
    assert (tmp_path / "back.txt").read_text() == "second, longer"


@pytest.mark.parametrize("key", ["../escape.txt", "/tmp/escape.txt", "a/../../escape.txt", "x.partial"])
def test_local_refuses_bad_keys_and_writes_nothing(tmp_path: Path, key: str) -> None:
    root = tmp_path / "store"
    storage = LocalStorage(root=str(root))
    source = tmp_path / "source.txt"
    source.write_text("data")
    with pytest.raises(ValueError, match="storage key"):
        storage.put_file(key, source, "text/plain")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["source.txt"]


# --- S3Storage against moto ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1, with fake credentials and nothing that could send a request elsewhere.

    ``moto_s3_endpoint`` binds port 0: the OS picks a free port at bind time (no race between choosing and
    binding), which also avoids ``ThreadedMotoServer.start`` waiting forever when its bind fails.
    """
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask 169.254.169.254 for credentials
        env.setenv("AWS_CONFIG_FILE", os.devnull)  # a developer's ~/.aws must not change the endpoint
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        env.setenv("NO_PROXY", "127.0.0.1,localhost")
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            env.delenv(name, raising=False)
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            env.delenv(name, raising=False)

        with moto_s3_endpoint() as endpoint:

            def answers() -> bool:
                try:
                    return httpx.get(endpoint + "/", timeout=1, trust_env=False).status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(answers, 15, f"moto server at {endpoint} answering", interval=0.05)
            yield endpoint


@pytest.fixture
def s3(s3_endpoint: str) -> Any:
    """A raw boto3 client on the moto server, for setting up and for checking what the resource did."""
    return boto3.session.Session().client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", config=Config(signature_version="s3v4")
    )


@pytest.fixture
def bucket(s3: Any) -> str:
    """A fresh bucket per test, so tests sharing the module's server never see each other's objects."""
    name = f"offload-test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def make_storage(endpoint: str, bucket: str, **settings: Any) -> S3Storage:
    return S3Storage(bucket=bucket, region="us-east-1", endpoint_url=endpoint, **settings)


def test_s3_small_upload_round_trip(s3_endpoint: str, s3: Any, bucket: str, tmp_path: Path) -> None:
    storage = make_storage(s3_endpoint, bucket)
    source = tmp_path / "hello.txt"
    source.write_bytes(b"hello from offload\n")

    stored = storage.put_file("docs/hello.txt", source, "text/plain; charset=utf-8")

    assert stored.key == "docs/hello.txt"
    assert stored.size == len(b"hello from offload\n")
    head = s3.head_object(Bucket=bucket, Key="docs/hello.txt")
    assert head["ContentType"] == "text/plain; charset=utf-8"
    assert "-" not in head["ETag"], "a small file should go up in one PUT"
    dest = tmp_path / "back.txt"
    assert storage.get_file("docs/hello.txt", dest) == dest
    assert dest.read_bytes() == b"hello from offload\n"


def test_s3_multipart_upload(s3_endpoint: str, s3: Any, bucket: str, tmp_path: Path) -> None:
    storage = make_storage(s3_endpoint, bucket, multipart_threshold_mb=5)
    source = tmp_path / "big.bin"
    checksum = write_random_file(source, 12 * MiB)

    stored = storage.put_file("videos/u1/big.bin", source, "application/octet-stream")

    assert stored.size == 12 * MiB
    head = s3.head_object(Bucket=bucket, Key="videos/u1/big.bin")
    assert head["ContentLength"] == 12 * MiB
    assert head["ContentType"] == "application/octet-stream"
    # A multipart object's ETag is "<md5 of the part md5s>-<number of parts>"; a single PUT has no suffix.
    match = re.fullmatch(r'"[0-9a-f]{32}-(\d+)"', head["ETag"])
    assert match, f"not a multipart ETag: {head['ETag']}"
    assert int(match[1]) >= 2
    dest = tmp_path / "back.bin"
    storage.get_file("videos/u1/big.bin", dest)
    assert sha256_of(dest) == checksum


def test_s3_presigned_url_fetches_the_object(s3_endpoint: str, bucket: str, tmp_path: Path) -> None:
    storage = make_storage(s3_endpoint, bucket)
    source = tmp_path / "thumb.jpg"
    payload = os.urandom(70_000)
    source.write_bytes(payload)
    before = dt.datetime.now(dt.UTC)
    stored = storage.put_file("thumbnails/u1/v1.jpg", source, "image/jpeg")
    after = dt.datetime.now(dt.UTC)

    # The stated end of the link: 7 days from the upload, never later than the signature's own.
    assert stored.expires_at is not None and stored.path is None
    week = dt.timedelta(days=7)
    assert before + week - dt.timedelta(seconds=1) <= stored.expires_at <= after + week

    short = storage.url("thumbnails/u1/v1.jpg", expires_in=60)
    for url in (stored.url, short):
        assert url.startswith(f"{s3_endpoint}/{bucket}/thumbnails/u1/v1.jpg?")
        response = httpx.get(url, timeout=10, trust_env=False)
        assert response.status_code == 200
        assert response.content == payload
        assert response.headers["content-type"] == "image/jpeg"
    assert "X-Amz-Expires=604800" in stored.url  # the default lifetime: 7 days, SigV4's maximum
    assert "X-Amz-Expires=60&" in short


def test_s3_prefix_is_applied(s3_endpoint: str, s3: Any, bucket: str, tmp_path: Path) -> None:
    storage = make_storage(s3_endpoint, bucket, prefix="tenant-a/")
    source = tmp_path / "a.txt"
    source.write_text("a")
    s3.put_object(Bucket=bucket, Key="outside/b.txt", Body=b"b")  # not under the prefix

    stored = storage.put_file("docs/a.txt", source, "text/plain")

    assert stored.key == "docs/a.txt"
    raw_keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(raw_keys) == ["outside/b.txt", "tenant-a/docs/a.txt"]
    assert f"/{bucket}/tenant-a/docs/a.txt?" in stored.url
    assert list(storage.list_keys()) == ["docs/a.txt"]
    assert storage.exists("docs/a.txt")
    assert not storage.exists("outside/b.txt")
    storage.delete("docs/a.txt")
    assert [item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["outside/b.txt"]


def test_s3_exists_delete_list_keys(s3_endpoint: str, bucket: str, tmp_path: Path) -> None:
    storage = make_storage(s3_endpoint, bucket)
    source = tmp_path / "x.txt"
    source.write_text("x")
    for key in ("videos/u1/v1.mp4", "videos/u1/v2.mp4", "videos/u2/v1.mp4", "thumbnails/u1/v1.jpg"):
        storage.put_file(key, source, "text/plain")

    assert list(storage.list_keys("videos/u1/")) == ["videos/u1/v1.mp4", "videos/u1/v2.mp4"]
    assert len(list(storage.list_keys())) == 4
    listed = list(storage.list_objects("videos/u1/"))
    assert [(o.key, o.size) for o in listed] == [("videos/u1/v1.mp4", 1), ("videos/u1/v2.mp4", 1)]
    assert all(o.modified.tzinfo is not None for o in listed)
    assert storage.exists("videos/u1/v1.mp4")
    assert not storage.exists("videos/u1/v3.mp4")

    storage.delete("videos/u1/v1.mp4")
    storage.delete("videos/u1/v1.mp4")  # deleting a missing key is not an error
    assert not storage.exists("videos/u1/v1.mp4")
    assert list(storage.list_keys("videos/")) == ["videos/u1/v2.mp4", "videos/u2/v1.mp4"]
    with pytest.raises(FileNotFoundError):
        storage.get_file("videos/u1/v1.mp4", tmp_path / "gone.txt")


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b"])
def test_s3_refuses_bad_keys(s3_endpoint: str, bucket: str, tmp_path: Path, key: str) -> None:
    storage = make_storage(s3_endpoint, bucket)
    source = tmp_path / "x.txt"
    source.write_text("x")
    with pytest.raises(ValueError, match="storage key"):
        storage.put_file(key, source, "text/plain")
    assert list(storage.list_keys()) == []
