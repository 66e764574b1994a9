"""The production resource set, chosen by ``OFFLOAD_ENV`` through ``resources_for``, running the whole video
pipeline against real servers on 127.0.0.1: moto's S3 server (source read from ``s3://``, outputs written
there and served by presigned URLs) and a fake Resend API (one email, with its idempotency key and the
links). Also: the API key never reaches the Dagster event log, ``file://`` sources are refused in
production, and the switch itself (unset means local; an unknown name is a configuration error).
"""

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import dagster as dg
import httpx
import pytest
import resend
from botocore.config import Config

from offload import paths
from offload.net.download import Downloader
from pipelines.video import media
from pipelines.video.jobs import video_pipeline
from resources import resources_for
from resources.database import AppDatabase
from resources.email import OutboxEmail, ResendEmail
from resources.storage import LocalStorage, S3Storage
from tests.support.moto_s3 import moto_s3_endpoint
from tests.support.resend_server import FakeResend, fake_resend_server
from tests.support.runs import failure_text, output_metadata

EMAIL_FROM = "Offload <noreply@offload.test>"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_endpoint() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def resend_server() -> Iterator[FakeResend]:
    with fake_resend_server() as fake:
        yield fake


@dataclass
class Production:
    """What a test needs to drive and inspect the production deployment on loopback."""

    endpoint: str
    bucket: str
    api_key: str
    resend: FakeResend
    s3: Any  # a raw boto3 client for setting up and checking, independent of the resource under test
    data_dir: Path

    def keys(self) -> set[str]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket)
        return {item["Key"] for item in listed.get("Contents", [])}


@pytest.fixture
def production(
    s3_endpoint: str,
    resend_server: FakeResend,
    postgres_url: str,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Production:
    """``OFFLOAD_ENV=production`` with every setting the deployment reads, pointed at the loopback servers;
    a fresh bucket and API key per test. Nothing configured here can send a request off this machine."""
    bucket = f"offload-{uuid.uuid4().hex[:12]}"
    api_key = f"re_test_{uuid.uuid4().hex}"
    env = {
        "OFFLOAD_ENV": "production",
        "OFFLOAD_S3_BUCKET": bucket,
        "OFFLOAD_S3_SOURCES": f"{bucket}/uploads/{{user_id}}/",  # each user reads their own uploads only
        "AWS_ENDPOINT_URL_S3": s3_endpoint,  # outputs and s3:// sources: boto3's own configuration
        "AWS_ACCESS_KEY_ID": "fake-access-key-id",
        "AWS_SECRET_ACCESS_KEY": "fake-secret-access-key",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",  # never ask 169.254.169.254 for credentials
        "AWS_CONFIG_FILE": os.devnull,  # a developer's ~/.aws must not change the endpoint
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "RESEND_API_KEY": api_key,
        "RESEND_API_URL": resend_server.url,
        "OFFLOAD_EMAIL_FROM": EMAIL_FROM,
        "DATABASE_URL": postgres_url,
        "NO_PROXY": "127.0.0.1,localhost",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in (
        "AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "OFFLOAD_S3_PREFIX", "OFFLOAD_FILE_ROOTS",
        "OFFLOAD_FETCH_ALLOW_HOSTS", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
        "http_proxy", "https_proxy", "all_proxy",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    # The SDK keeps its key and URL in module globals: restore them afterwards. A closed loopback port as
    # the SDK's own URL means only RESEND_API_URL (read by the resource per send) can reach the fake.
    monkeypatch.setattr(resend, "api_key", None)
    monkeypatch.setattr(resend, "api_url", "http://127.0.0.1:9")
    with resend_server.lock:
        resend_server.requests.clear()
        resend_server.fail_next.clear()
    s3 = boto3.session.Session().client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    s3.create_bucket(Bucket=bucket)
    return Production(s3_endpoint, bucket, api_key, resend_server, s3, data_dir)


def payload(video_url: str, **extra: Any) -> dict[str, Any]:
    return {"video_id": "v1", "video_url": video_url, "user_id": "u1",
            "user_email": "ada@example.com"} | extra  # fmt: skip


# --- the whole pipeline on production resources ------------------------------------------------------------


def test_video_pipeline_end_to_end_on_s3_and_resend(
    production: Production, clips: dict[str, Path], tmp_path: Path
) -> None:
    production.s3.upload_file(str(clips["plain"]), production.bucket, "uploads/u1/source.mp4")
    instance = dg.DagsterInstance.ephemeral()

    result = video_pipeline.execute_in_process(
        run_config=payload(f"s3://{production.bucket}/uploads/u1/source.mp4"),
        resources=resources_for(paths.environment()),
        instance=instance,
    )

    assert result.success
    expected = {"mp4": "videos/u1/v1.mp4", "webm": "videos/u1/v1.webm", "thumbnail": "thumbnails/u1/v1.jpg"}
    assert production.keys() == {"uploads/u1/source.mp4", *expected.values()}

    # The outputs in the bucket are real videos and a JPEG.
    downloaded = {}
    for kind, key in expected.items():
        downloaded[kind] = tmp_path / key.replace("/", "_")
        production.s3.download_file(production.bucket, key, str(downloaded[kind]))
    fetched = {kind: path.read_bytes() for kind, path in downloaded.items()}
    for kind, codecs in {"mp4": ("h264", "aac"), "webm": ("vp9", "opus")}.items():
        info = media.probe(downloaded[kind])
        assert (info.video_codec, info.audio_codec) == codecs
        assert (info.width, info.height) == (320, 240)
    assert fetched["thumbnail"][:2] == b"\xff\xd8"

    # The run's result links are presigned URLs of the local endpoint that serve those same bytes.
    outputs = result.output_for_node("notify")["outputs"]
    assert set(outputs) == set(expected)
    with httpx.Client(trust_env=False, timeout=30) as client:
        for kind, url in outputs.items():
            parts = urlsplit(url)
            assert f"{parts.scheme}://{parts.netloc}" == production.endpoint
            assert parts.path == f"/{production.bucket}/{expected[kind]}"
            query = parse_qs(parts.query)
            assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and "X-Amz-Signature" in query
            response = client.get(url)
            response.raise_for_status()
            assert response.content == fetched[kind]

    # Exactly one email reached Resend, with the run's idempotency key and the links.
    [request] = production.resend.requests
    assert (request.method, request.path) == ("POST", "/emails")
    assert request.headers["authorization"] == f"Bearer {production.api_key}"
    assert request.headers["idempotency-key"] == f"video-ready/{result.run_id}/v1"
    assert request.body["from"] == EMAIL_FROM and request.body["to"] == ["ada@example.com"]
    for kind in ("mp4", "webm"):
        assert f'href="{outputs[kind]}"' in request.body["html"]
        assert f"{kind} <{outputs[kind]}>" in request.body["text"]  # the text part carries the links too
    assert f'src="{outputs["thumbnail"]}"' in request.body["html"]

    # The UI shows the links and when they stop working (7 days, the presigned URLs' lifetime).
    shown = output_metadata(result, "upload")
    assert f"| mp4 | {len(fetched['mp4']):,} bytes | [open]({outputs['mp4']}) |" in shown["results"]
    assert "The links are presigned and stop working at" in shown["results"]
    week_ahead = time.time() + 7 * 24 * 3600
    assert week_ahead - 600 < shown["links_expire_at"] <= week_ahead

    # The API key is nowhere in what Dagster stored about the run (events, log lines, the run itself).
    stored = [dg.serialize_value(entry) for entry in instance.all_logs(result.run_id)]
    stored.append(dg.serialize_value(instance.get_run_by_id(result.run_id)))
    everything = "\n".join(stored)
    assert "video ready" in everything and production.bucket in everything  # the search does see the run
    assert production.api_key not in everything

    # Production wrote nothing locally but scratch files, and cleaned those up.
    assert not (production.data_dir / "storage").exists()
    assert not (production.data_dir / "outbox").exists()
    assert not (production.data_dir / "work" / result.run_id).exists()

    # The usage went to the production database (Postgres), under this run.
    usage = AppDatabase(url=os.environ["DATABASE_URL"]).usage_for("u1")
    assert {(row.kind, row.quantity, row.run_id) for row in usage} == {
        ("video_transcoded", 6, result.run_id), ("emails_sent", 1, result.run_id)}  # fmt: skip


def test_file_source_is_refused_in_production(
    production: Production, clips: dict[str, Path], tmp_path: Path
) -> None:
    # A file under the samples directory: the local deployment reads it, production must not.
    sample = paths.samples_dir() / "plain.mp4"
    sample.parent.mkdir(parents=True)
    shutil.copyfile(clips["plain"], sample)
    local_downloader = resources_for(paths.LOCAL)["downloader"]
    assert isinstance(local_downloader, Downloader)
    assert local_downloader.fetch(sample.as_uri(), tmp_path / "copy") == sample.stat().st_size

    result = video_pipeline.execute_in_process(
        run_config=payload(sample.as_uri()),
        resources=resources_for(paths.environment()),
        raise_on_error=False,
    )

    assert not result.success
    assert [event.step_key for event in result.get_step_failure_events()] == ["download"]
    assert "video_url: refused: file URLs are not enabled" in failure_text(result)
    assert production.keys() == set()
    assert production.resend.requests == []


def test_s3_source_of_another_user_or_bucket_is_refused_in_production(
    production: Production, clips: dict[str, Path]
) -> None:
    """``user_id: mallory`` naming the victim's video stored it under mallory's prefix and emailed her the
    link; now the source must lie in mallory's own upload folder, and the refusal reads as "not found"."""
    production.s3.upload_file(str(clips["plain"]), production.bucket, "uploads/u1/source.mp4")
    production.s3.upload_file(str(clips["plain"]), production.bucket, "videos/u1/private.mp4")
    other = f"offload-{uuid.uuid4().hex[:12]}"
    production.s3.create_bucket(Bucket=other)
    production.s3.upload_file(str(clips["plain"]), other, "uploads/mallory/source.mp4")
    before = production.keys()

    for url in (
        f"s3://{production.bucket}/videos/u1/private.mp4",
        f"s3://{production.bucket}/uploads/u1/source.mp4",
        f"s3://{other}/uploads/mallory/source.mp4",
        f"s3://{production.bucket}/uploads/mallory/missing.mp4",
    ):
        result = video_pipeline.execute_in_process(
            run_config=payload(url, user_id="mallory", user_email="mallory@example.com"),
            resources=resources_for(paths.environment()),
            raise_on_error=False,
        )
        assert not result.success
        assert [event.step_key for event in result.get_step_failure_events()] == ["download"]
        assert f"video_url: not found or not allowed: {url}" in failure_text(result)
    assert production.keys() == before  # nothing stored under anyone's prefix
    assert production.resend.requests == []  # nobody emailed


# --- the switch ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [None, "", "local", " LOCAL "])
def test_unset_or_local_environment_gives_the_offline_resources(
    name: str | None, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if name is None:
        monkeypatch.delenv("OFFLOAD_ENV", raising=False)
    else:
        monkeypatch.setenv("OFFLOAD_ENV", name)
    monkeypatch.delenv("OFFLOAD_FILE_ROOTS", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)

    resources = resources_for(paths.environment())

    storage, email, downloader = resources["storage"], resources["email"], resources["downloader"]
    assert isinstance(storage, LocalStorage) and storage.root == str(data_dir / "storage")
    assert isinstance(email, OutboxEmail) and email.directory == str(data_dir / "outbox")
    assert isinstance(downloader, Downloader) and downloader.file_roots == [str(data_dir / "samples")]
    database = resources["database"]
    assert isinstance(database, AppDatabase) and database.url == f"sqlite:///{data_dir / 'offload.db'}"


@pytest.mark.parametrize("name", ["production", " Production "])
def test_production_environment_gives_s3_resend_and_no_file_roots(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OFFLOAD_ENV", name)
    monkeypatch.setenv("OFFLOAD_FILE_ROOTS", "/tmp")  # a local setting that must not leak into production
    monkeypatch.delenv("OFFLOAD_S3_SOURCES", raising=False)

    resources = resources_for(paths.environment())

    assert isinstance(resources["storage"], S3Storage)
    assert isinstance(resources["email"], ResendEmail)
    assert isinstance(resources["downloader"], Downloader) and resources["downloader"].file_roots == []
    assert resources["downloader"].s3_sources == []  # s3:// only from sources OFFLOAD_S3_SOURCES names
    assert isinstance(resources["database"], AppDatabase)


@pytest.mark.parametrize("name", ["staging", "prod", "dev"])
def test_unknown_environment_is_a_configuration_error(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFLOAD_ENV", name)
    with pytest.raises(ValueError, match=f"^OFFLOAD_ENV: .*'{name}'"):
        resources_for(paths.environment())


def test_resources_for_refuses_an_unknown_environment():
    with pytest.raises(ValueError, match="environment: must be 'local' or 'production', got 'staging'"):
        resources_for("staging")
