"""The whole video pipeline on generated clips, in process: outputs decoded back with PyAV, the email in
the outbox, the usage row in the app database, the run's result; bad inputs failing with their one clear
error; and re-execution from a failed upload that does not download or transcode again (nor bill twice).
The network steps retry under the project's policy; tests that fail on purpose set it per run (fast
delays, or a single attempt) with run tags."""

import datetime as dt
import email
import email.policy
import os
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from offload.net.download import Downloader
from offload.retry import MAX_ATTEMPTS_TAG, RetryPolicy
from pipelines.video import media
from pipelines.video.jobs import process_video, process_video_graph, video_pipeline
from resources.database import AppDatabase
from resources.email import OutboxEmail
from resources.storage import LocalStorage
from tests.support.runs import failure_text, started_steps


def local_resources(data_dir: Path, roots: list[Path], **downloader: Any) -> dict[str, Any]:
    return {
        "storage": LocalStorage(root=str(data_dir / "storage")),
        "email": OutboxEmail(directory=str(data_dir / "outbox")),
        "downloader": Downloader(file_roots=[str(root) for root in roots], **downloader),
        "database": AppDatabase(url=f"sqlite:///{data_dir / 'app.db'}"),
    }


def usage_of(data_dir: Path, user_id: str = "u1") -> dict[str, tuple[int, str, str]]:
    """The user's usage rows as ``{kind: (quantity, unit, run_id)}``."""
    rows = AppDatabase(url=f"sqlite:///{data_dir / 'app.db'}").usage_for(user_id)
    return {row.kind: (row.quantity, row.unit, row.run_id) for row in rows}


def payload(clip: Path, video_id: str = "v1", **extra: Any) -> dict[str, Any]:
    return {"video_id": video_id, "video_url": clip.as_uri(), "user_id": "u1",
            "user_email": "ada@example.com"} | extra  # fmt: skip


def result_of(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    return result.output_for_node("notify")


@pytest.mark.parametrize(
    ("clip", "size", "audio"),
    [("plain", (320, 240), True), ("silent", (320, 240), False), ("odd", (320, 240), True),
     ("portrait", (240, 320), True), ("rotated", (240, 320), True)],
)  # fmt: skip
def test_video_pipeline_produces_every_format(clips, data_dir, clip, size, audio):
    source = clips[clip]
    result = video_pipeline.execute_in_process(
        run_config=payload(source, video_id=clip, formats=["mp4", "webm", "gif"]),
        resources=local_resources(data_dir, [source.parent]),
    )
    assert result.success
    out = result_of(result)
    assert set(out["outputs"]) == {"mp4", "webm", "gif", "thumbnail"}
    source_info = media.probe(source)
    assert (out["width"], out["height"]) == (source_info.width, source_info.height)
    assert out["duration"] == pytest.approx(source_info.duration, abs=0.05)
    stored = data_dir / "storage"
    for fmt, (video_codec, audio_codec) in {"mp4": ("h264", "aac"), "webm": ("vp9", "opus")}.items():
        info = media.probe(stored / "videos" / "u1" / f"{clip}.{fmt}")
        assert info.video_codec == video_codec
        assert info.audio_codec == (audio_codec if audio else None)
        assert (info.width, info.height) == size
        assert abs(info.duration - source_info.duration) <= 0.2
    assert media.probe(stored / "videos" / "u1" / f"{clip}.gif").video_codec == "gif"
    assert (stored / "thumbnails" / "u1" / f"{clip}.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert out["outputs"]["mp4"] == (stored / "videos" / "u1" / f"{clip}.mp4").resolve().as_uri()
    # the work files of a successful run are gone
    assert not (data_dir / "work" / result.run_id).exists()


def test_user_is_emailed_the_links_once(clips, data_dir):
    result = video_pipeline.execute_in_process(
        run_config=payload(clips["plain"]), resources=local_resources(data_dir, [clips["plain"].parent])
    )
    assert result.success
    messages = list((data_dir / "outbox").glob("*.eml"))
    assert len(messages) == 1
    message = email.message_from_bytes(messages[0].read_bytes(), policy=email.policy.default)
    assert message["To"] == "ada@example.com"
    assert "v1" in message["Subject"]
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    for fmt in ("mp4", "webm"):
        assert result_of(result)["outputs"][fmt] in html
        assert f"{fmt} <{result_of(result)['outputs'][fmt]}>" in text  # the text part has the links too
    assert "gif" not in result_of(result)["outputs"]
    # Billed: 3 s of video in two formats (mp4, webm), and one email, under this run.
    assert usage_of(data_dir) == {
        "video_transcoded": (6, "second", result.run_id),
        "emails_sent": (1, "email", result.run_id),
    }


def test_run_shows_progress_and_result_metadata(clips, data_dir):
    instance = dg.DagsterInstance.ephemeral()
    result = video_pipeline.execute_in_process(
        run_config=payload(clips["plain"], formats=["mp4"]),
        resources=local_resources(data_dir, [clips["plain"].parent]),
        instance=instance,
    )
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(m.startswith("mp4 100%") for m in messages)
    assert any(m.startswith("probed {") and '"has_audio": true' in m for m in messages)
    notify_outputs = [e for e in result.all_events if e.is_successful_output and e.step_key == "notify"]
    assert notify_outputs[0].event_specific_data.metadata["result"].value["video_id"] == "v1"
    thumb = [e for e in result.all_events if e.is_successful_output and e.step_key == "thumbnail"]
    assert "data:image/jpeg;base64," in thumb[0].event_specific_data.metadata["thumbnail"].value
    # The results in the UI without opening JSON: the thumbnail as an image, each local file as its path.
    [uploaded] = [e for e in result.all_events if e.is_successful_output and e.step_key == "upload"]
    shown = uploaded.event_specific_data.metadata
    mp4 = (data_dir / "storage" / "videos/u1/v1.mp4").resolve()
    assert shown["results"].value.startswith("![thumbnail](data:image/jpeg;base64,/9j/")
    assert f"| mp4 | {mp4.stat().st_size:,} bytes | `{mp4}` |" in shown["results"].value
    assert isinstance(shown["mp4_path"], dg.PathMetadataValue) and shown["mp4_path"].value == str(mp4)
    assert "links_expire_at" not in shown


def test_presigned_results_state_their_expiry(tmp_path):
    from pipelines.video.results import results_metadata
    from pipelines.video.steps import Uploaded

    thumbnail = tmp_path / "thumbnail.jpg"
    thumbnail.write_bytes(b"\xff\xd8\xff\xe0 jpeg")
    ends = dt.datetime(2026, 12, 11, 16, 40, 5, tzinfo=dt.UTC)
    stored = {
        "mp4": Uploaded("videos/u1/v1/output.mp4", "https://s3.test/b/mp4?X-Amz-Signature=s", 2048, ends),
        "thumbnail": Uploaded("thumbs/u1/v1.jpg", "https://s3.test/b/jpg?X-Amz-Signature=t", 10, ends),
    }

    shown = results_metadata(stored, thumbnail)

    assert "| mp4 | 2,048 bytes | [open](https://s3.test/b/mp4?X-Amz-Signature=s) |" in shown["results"].value
    assert "stop working at 2026-12-11 16:40 UTC" in shown["results"].value
    assert shown["mp4_url"].value == "https://s3.test/b/mp4?X-Amz-Signature=s"
    assert shown["links_expire_at"].value == ends.timestamp()


def test_process_video_makes_the_one_format_asked_for(clips, data_dir):
    result = process_video.execute_in_process(
        run_config=payload(clips["silent"], format="webm"),
        resources=local_resources(data_dir, [clips["silent"].parent]),
    )
    assert result.success
    assert set(result_of(result)["outputs"]) == {"webm", "thumbnail"}


def test_not_a_video_fails_for_good_at_probe(tmp_path, data_dir):
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"this is a text file" * 50)
    result = video_pipeline.execute_in_process(
        run_config=payload(fake), resources=local_resources(data_dir, [tmp_path]), raise_on_error=False
    )
    assert not result.success
    assert "not a video:" in failure_text(result)
    assert [e.step_key for e in result.get_step_failure_events()] == ["probe"]
    assert list((data_dir / "outbox").glob("*.eml")) == []


def test_too_large_source_is_refused_while_downloading(clips, data_dir):
    result = video_pipeline.execute_in_process(
        run_config=payload(clips["plain"]),
        resources=local_resources(data_dir, [clips["plain"].parent], max_bytes=1000),
        raise_on_error=False,
    )
    assert not result.success
    assert "video_url: too large" in failure_text(result)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/video.mp4", "http://[::1]:9/video.mp4", "http://localhost:9/v.mp4"],
)
def test_loopback_urls_are_refused_before_any_connection(data_dir, url):
    result = video_pipeline.execute_in_process(
        run_config=payload(Path("/x"), video_url=url),
        resources=local_resources(data_dir, []),
        raise_on_error=False,
    )
    assert not result.success
    assert "refused" in failure_text(result)


def test_file_outside_allowed_roots_is_refused(clips, data_dir, tmp_path):
    result = video_pipeline.execute_in_process(
        run_config=payload(clips["plain"]),
        resources=local_resources(data_dir, [tmp_path]),
        raise_on_error=False,
    )
    assert not result.success
    assert "video_url:" in failure_text(result)


def test_unreachable_url_fails_after_its_retries(data_dir):
    import socket

    with socket.socket() as probe_socket:  # a port nothing listens on
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    result = video_pipeline.execute_in_process(
        run_config=payload(Path("/x"), video_url=f"http://127.0.0.1:{port}/v.mp4"),
        resources=local_resources(data_dir, [], allow_hosts=[f"127.0.0.1:{port}"], retry_base_delay=0.01),
        raise_on_error=False,
        tags=RetryPolicy(min_delay=0.01, max_delay=0.05).tags(),
    )
    assert not result.success
    assert [e.step_key for e in result.get_step_failure_events()] == ["download"]
    restarts = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_RESTARTED]
    assert len(restarts) == 2  # the download step was tried 3 times in all (the project default)
    error = result.get_step_failure_events()[0].step_failure_data.error
    assert error.cause.message.startswith("offload.errors.FetchError: video_url: connection failed")


# Re-execution from failure needs a job Dagster can rebuild by import, so it is defined at module level.
class FlakyStorage(LocalStorage):
    """Fails every upload while the file named by OFFLOAD_TEST_UPLOAD_FAILS exists."""

    def put_file(self, key, path, content_type):
        if Path(os.environ["OFFLOAD_TEST_UPLOAD_FAILS"]).exists():
            raise ConnectionError("storage unavailable (forced by the test)")
        return super().put_file(key, path, content_type)


def flaky_upload_job() -> dg.JobDefinition:
    data = Path(os.environ["OFFLOAD_DATA_DIR"])
    return process_video_graph.to_job(
        name="video_pipeline_flaky_upload",
        config=video_pipeline.config_mapping,
        executor_def=dg.in_process_executor,
        resource_defs={
            "storage": FlakyStorage(root=str(data / "storage")),
            "email": OutboxEmail(directory=str(data / "outbox")),
            "downloader": Downloader(file_roots=[os.environ["OFFLOAD_TEST_ROOT"]]),
            "database": AppDatabase(url=f"sqlite:///{data / 'app.db'}"),
        },
    )


def flaky_upload_job_work_removed() -> dg.JobDefinition:
    """The same job under another name: Dagster caches a rebuilt job (with its resources' directories)
    per import path, so each test case needs its own."""
    return flaky_upload_job()


@pytest.mark.parametrize("work_removed", [False, True], ids=["work-files-kept", "work-files-removed"])
def test_reexecution_after_failed_upload_skips_download_and_transcodes(
    clips, data_dir, tmp_path, monkeypatch, work_removed
):
    """Also when the cleanup job removed the run's work files in between: the upload fetches the source
    again and rebuilds the renditions its inputs describe, instead of failing on the missing file."""
    fails = tmp_path / "upload-fails"
    fails.touch()
    monkeypatch.setenv("OFFLOAD_TEST_UPLOAD_FAILS", str(fails))
    monkeypatch.setenv("OFFLOAD_TEST_ROOT", str(clips["plain"].parent))
    job = dg.reconstructable(flaky_upload_job_work_removed if work_removed else flaky_upload_job)
    (tmp_path / "home").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "home")) as instance:
        first = dg.execute_job(
            job,
            instance=instance,
            run_config=payload(clips["plain"], formats=["mp4", "gif"]),
            tags={MAX_ATTEMPTS_TAG: "1"},  # fail the upload at once instead of after its retries
        )
        assert not first.success
        assert started_steps(instance, first.run_id) == {
            "download", "probe", "thumbnail", "transcode[mp4]", "transcode[gif]", "upload"}  # fmt: skip
        fails.unlink()
        if work_removed:
            shutil.rmtree(data_dir / "work")
        second = dg.execute_job(
            job,
            instance=instance,
            reexecution_options=dg.ReexecutionOptions.from_failure(first.run_id, instance),
        )
        assert second.success
        assert started_steps(instance, second.run_id) == {"upload", "notify"}
        messages = [entry.user_message for entry in instance.all_logs(second.run_id)]
        assert any(m.startswith("source fetched again") for m in messages) == work_removed
    source_info = media.probe(clips["plain"])
    for fmt in ("mp4", "gif"):
        media.verify(data_dir / "storage" / "videos" / "u1" / f"v1.{fmt}", fmt, source_info)
    assert (data_dir / "storage" / "thumbnails" / "u1" / "v1.jpg").is_file()
    assert len(list((data_dir / "outbox").glob("*.eml"))) == 1
    # Billed once, under the first run of the family (the re-execution's root).
    assert usage_of(data_dir)["emails_sent"] == (1, "email", first.run_id)
    assert usage_of(data_dir)["video_transcoded"][2] == first.run_id


@pytest.mark.parametrize("corrupt_times", [1, 3], ids=["once", "every-attempt"])
def test_a_corrupt_rendition_is_retried_and_never_stored(clips, data_dir, monkeypatch, corrupt_times):
    """ffmpeg "succeeds" but leaves half a file (as when another process wrote over it): verification
    fails the step, which is retried (3 attempts); a file that stays corrupt never reaches storage."""
    real = media.run_ffmpeg
    corrupted: list[Path] = []

    def half_written(args: list[str], seconds: float, on_progress: Any = None) -> None:
        real(args, seconds, on_progress)
        target = Path(args[-1])
        if target.suffix == ".mp4" and len(corrupted) < corrupt_times:
            data = target.read_bytes()
            target.write_bytes(data[: len(data) // 2])
            corrupted.append(target)

    monkeypatch.setattr(media, "run_ffmpeg", half_written)
    instance = dg.DagsterInstance.ephemeral()
    result = video_pipeline.execute_in_process(
        run_config=payload(clips["plain"], formats=["mp4"]),
        resources=local_resources(data_dir, [clips["plain"].parent]),
        instance=instance,
        raise_on_error=False,
    )
    restarts = [e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_RESTARTED]
    assert restarts == ["transcode[mp4]"] * min(corrupt_times, 2)
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(m.startswith("mp4 failed verification: mp4: does not decode") for m in messages)
    stored = data_dir / "storage" / "videos" / "u1" / "v1.mp4"
    if corrupt_times < 3:
        assert result.success
        media.verify(stored, "mp4", media.probe(clips["plain"]))
    else:
        assert not result.success
        assert [e.step_key for e in result.get_step_failure_events()] == ["transcode[mp4]"]
        assert not stored.exists()
        assert list((data_dir / "outbox").glob("*.eml")) == []
