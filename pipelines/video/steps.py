"""The video pipeline's steps. Each returns a typed value that the IO manager persists, so re-executing a
failed run from failure starts at the failed step and reuses the files the finished steps made.

The steps that talk to the network (``download``, ``upload``, ``notify``) retry under the project's retry
policy (``offload.retry``); ``notify`` may, because its email carries an idempotency key. ``probe``,
``thumbnail`` and ``transcode`` do not: FFmpeg given the same file fails the same way again. The one
exception is an output that fails verification (``media.verify``: it must decode end to end, with every
stream, as long as the source): that step is retried, and the file never reaches storage.

Crash-resume safety (issue 13). Every encode writes into a directory of its own attempt
(``<work>/attempts/<run id>-<retry>/``), is verified, and only then renamed into place (``output.mp4``): a
resumed or retried step never writes where an earlier attempt may still be writing. A step whose work files
are gone (the cleanup job removed them before a re-execution from failure) fetches the source again and
rebuilds what it needs from its inputs, instead of failing again on the same missing file.
"""

import base64
import datetime as dt
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from offload import metadata, paths
from offload.errors import AbortTaskRunError, FetchError
from offload.keys import thumbnail_key, video_key
from offload.log import Progress, StepLog
from offload.net.download import Downloader
from offload.result import job_result
from offload.retry import retrying
from pipelines.usage import record_usage, run_family_id
from pipelines.video import media
from pipelines.video.payload import VideoPayload
from pipelines.video.results import results_metadata
from resources.database import AppDatabase, UsageItem
from resources.email import Email, EmailSender
from resources.storage import Storage


@dataclass(frozen=True)
class Source:
    """The downloaded original, and the request it came with."""

    payload: dict[str, Any]
    path: str
    size: int
    work_dir: str
    started_at: float


@dataclass(frozen=True)
class Rendition:
    """One produced file waiting to be uploaded."""

    kind: str  # mp4 | webm | gif | thumbnail
    path: str
    size: int
    seconds: float


@dataclass(frozen=True)
class Uploaded:
    key: str
    url: str
    size: int
    expires_at: dt.datetime | None = None  # a presigned link's end
    path: str | None = None  # the file, in local storage


def _run_work_dir(context: dg.OpExecutionContext) -> Path:
    work = paths.work_dir() / context.run_id
    work.mkdir(parents=True, exist_ok=True)
    return work


@dg.op(tags={"kind": "download"})
@retrying()
def download(context: dg.OpExecutionContext, config: VideoPayload, downloader: Downloader) -> Source:
    """Stream the source to a work file, under the downloader's size cap and SSRF policy."""
    log = StepLog(context)
    started = time.time()
    target = _run_work_dir(context) / "source"
    progress = Progress(log, "download", on_point=_publisher(context, "download"))
    metadata.update({"step": "download", "progress": 0}, context=context)

    def on_bytes(done: int, total: int | None) -> None:
        if total:
            progress.update(done / total)

    with log.timed("downloaded", {"video_id": config.video_id}) as fields:
        size = _fetch(downloader, config.video_url, config.user_id, target, on_bytes, log)
        fields["bytes"] = size
    return Source(
        payload=config.model_dump(),
        path=str(target),
        size=size,
        work_dir=str(target.parent),
        started_at=started,
    )


def _publisher(context: dg.OpExecutionContext, step: str) -> Any:
    """Publishes a step's 10% points as the run's metadata (``{step, progress}``; offload/metadata.py)."""

    def publish(percent: int) -> None:
        metadata.update({"step": step, "progress": percent}, context=context)

    return publish


def _fetch(downloader: Downloader, url: str, user_id: str, target: Path, on_bytes: Any, log: StepLog) -> int:
    """The source, fetched under the payload's own user (its ``s3://`` sources are that user's)."""
    try:
        return downloader.fetch(url, target, on_progress=on_bytes, log=log, user_id=user_id)
    except FetchError as error:
        if not error.retryable:
            raise AbortTaskRunError(f"video_url: {error}") from None
        raise FetchError(f"video_url: {error}", retryable=True, status=error.status) from error


def _source_file(context: dg.OpExecutionContext, source: Source, downloader: Downloader) -> Path:
    """The downloaded original, fetched again if its work file is gone (removed by the cleanup job before
    a re-execution from failure). A source that changed size since the first download fails for good: the
    outputs already made came from the other one."""
    path = Path(source.path)
    if path.is_file():
        return path
    log = StepLog(context)
    path.parent.mkdir(parents=True, exist_ok=True)
    with log.timed("source fetched again (work file was gone)", {"path": str(path)}):
        size = _fetch(downloader, source.payload["video_url"], source.payload["user_id"], path, None, log)
    if size != source.size:
        path.unlink(missing_ok=True)
        raise AbortTaskRunError(
            f"video_url: changed since the first download ({size} bytes, was {source.size})"
        )
    return path


@dg.op(out={"info": dg.Out(media.VideoInfo), "formats": dg.DynamicOut(str)})
def probe(context: dg.OpExecutionContext, source: Source, downloader: Downloader):
    """Read duration, size, rate and codecs; a file that is not a decodable video fails for good here."""
    try:
        info = media.probe(_source_file(context, source, downloader))
    except media.NotAVideo as error:
        raise AbortTaskRunError(f"not a video: {error}") from None
    StepLog(context).info("probed", asdict(info) | {"has_audio": info.has_audio})
    yield dg.Output(
        info, "info", metadata={k: dg.MetadataValue.text(str(v)) for k, v in asdict(info).items()}
    )
    for fmt in source.payload["formats"]:
        yield dg.DynamicOutput(fmt, output_name="formats", mapping_key=fmt)


def _attempt_dir(context: dg.OpExecutionContext, source: Source, kind: str) -> Path:
    """A directory only this attempt (run id, output kind, retry number) writes: an earlier attempt, still
    writing after a crash, can never touch this attempt's file."""
    attempt = Path(source.work_dir) / "attempts" / f"{context.run_id}-{kind}-{context.retry_number}"
    attempt.mkdir(parents=True, exist_ok=True)
    return attempt


def _encode(
    context: dg.OpExecutionContext,
    source: Source,
    info: media.VideoInfo,
    kind: str,
    source_path: Path,
) -> Rendition:
    """Encode ``kind`` (a format, or ``thumbnail``) into this attempt's directory, verify it, then rename it
    into place (``output.<fmt>``, ``thumbnail.jpg``) in one step: the file at that path is always whole."""
    log = StepLog(context)
    progress = Progress(log, kind, on_point=_publisher(context, kind))
    metadata.update({"step": kind, "progress": 0}, context=context)
    name = "thumbnail.jpg" if kind == "thumbnail" else f"output.{kind}"
    attempt = _attempt_dir(context, source, kind)
    partial, target = attempt / name, Path(source.work_dir) / name
    if kind == "thumbnail":
        args, seconds = media.thumbnail_args(info, source_path, partial), 0.0
    else:
        args, seconds = media.encode_args(kind, info, source_path, partial), media.output_seconds(kind, info)
    started = time.perf_counter()
    try:
        media.run_ffmpeg(args, seconds, on_progress=progress.update)
        if kind != "thumbnail":
            media.verify(partial, kind, info)
        os.replace(partial, target)
    except media.FFmpegFailed as error:
        raise dg.Failure(description=f"{kind}: {error}") from None
    except media.CorruptOutput as error:
        log.warning(f"{kind} failed verification: {error}")
        raise dg.RetryRequested(max_retries=2) from error
    finally:
        shutil.rmtree(attempt, ignore_errors=True)
    elapsed = round(time.perf_counter() - started, 3)
    rendition = Rendition(kind=kind, path=str(target), size=target.stat().st_size, seconds=elapsed)
    log.info(f"{kind} ready", {"bytes": rendition.size, "duration_s": elapsed})
    metadata.increment("renditions_done", context=context)
    return rendition


@dg.op
def thumbnail(
    context: dg.OpExecutionContext, source: Source, info: media.VideoInfo, downloader: Downloader
) -> dg.Output[Rendition]:
    """A JPEG frame at about 10% of the duration, shown in the UI as the step's metadata."""
    rendition = _encode(context, source, info, "thumbnail", _source_file(context, source, downloader))
    inline = base64.b64encode(Path(rendition.path).read_bytes()).decode()
    return dg.Output(rendition, metadata={
        "thumbnail": dg.MetadataValue.md(f"![thumbnail](data:image/jpeg;base64,{inline})"),
        "bytes": rendition.size,
    })  # fmt: skip


@dg.op
def transcode(
    context: dg.OpExecutionContext, fmt: str, source: Source, info: media.VideoInfo, downloader: Downloader
) -> dg.Output[Rendition]:
    """Encode one format with the ffmpeg binary, logging progress at every 10%."""
    rendition = _encode(context, source, info, fmt, _source_file(context, source, downloader))
    return dg.Output(rendition, metadata={"bytes": rendition.size, "encode_seconds": rendition.seconds})


def _in_place(
    context: dg.OpExecutionContext,
    source: Source,
    info: media.VideoInfo,
    item: Rendition,
    downloader: Downloader,
) -> Path:
    """The rendition's file as its step made it, rebuilt (source fetched again if needed) when the work
    files were removed or it is not the size recorded: a re-execution never fails on a missing file."""
    path = Path(item.path)
    if path.is_file() and path.stat().st_size == item.size:
        return path
    StepLog(context).warning(
        f"{item.kind} work file missing or changed: making it again", {"path": str(path)}
    )
    return Path(_encode(context, source, info, item.kind, _source_file(context, source, downloader)).path)


@dg.op
@retrying()
def upload(
    context: dg.OpExecutionContext,
    source: Source,
    info: media.VideoInfo,
    thumb: Rendition,
    renditions: list[Rendition],
    storage: Storage,
    downloader: Downloader,
) -> dg.Output[dict[str, Uploaded]]:
    """Stream every output to storage under keys generated from the validated ids."""
    log = StepLog(context)
    user_id, video_id = source.payload["user_id"], source.payload["video_id"]
    stored: dict[str, Uploaded] = {}
    items = [*renditions, thumb]
    metadata.update({"step": "upload", "progress": 0}, context=context)
    for done, item in enumerate(items, start=1):
        if item.kind == "thumbnail":
            key, content_type = thumbnail_key(user_id, video_id), media.CONTENT_TYPES["jpg"]
        else:
            key, content_type = video_key(user_id, video_id, item.kind), media.CONTENT_TYPES[item.kind]
        with log.timed("uploaded", {"key": key, "bytes": item.size}):
            obj = storage.put_file(key, _in_place(context, source, info, item, downloader), content_type)
        stored[item.kind] = Uploaded(
            key=obj.key, url=obj.url, size=obj.size, expires_at=obj.expires_at, path=obj.path
        )
        metadata.update({"step": "upload", "progress": round(100 * done / len(items))}, context=context)
    return dg.Output(stored, metadata=results_metadata(stored, Path(thumb.path)))


def _email_html(payload: dict[str, Any], stored: dict[str, Uploaded]) -> str:
    links = "".join(
        f'<li><a href="{u.url}">{kind}</a> ({u.size:,} bytes)</li>'
        for kind, u in stored.items()
        if kind != "thumbnail"
    )
    return (
        f"<p>Your video <b>{payload['video_id']}</b> is ready.</p><ul>{links}</ul>"
        f'<p><img src="{stored["thumbnail"].url}" alt="thumbnail"></p>'
    )


@dg.op
@retrying()
def notify(
    context: dg.OpExecutionContext,
    source: Source,
    info: media.VideoInfo,
    stored: dict[str, Uploaded],
    email: EmailSender,
    database: AppDatabase,
) -> dg.Output[dict[str, Any]]:
    """Email the user their links (once per run family, even if retried), record the usage (seconds of
    video transcoded, summed over the formats, and the email), then free the work files."""
    payload = source.payload
    idempotency_key = f"video-ready/{run_family_id(context)}/{payload['video_id']}"
    message = Email(to=payload["user_email"], subject=f"Your video {payload['video_id']} is ready",
                    html=_email_html(payload, stored))  # fmt: skip
    email_id = email.send(message, idempotency_key)
    formats = [kind for kind in stored if kind != "thumbnail"]
    transcoded = math.ceil(sum(media.output_seconds(fmt, info) for fmt in formats))
    record_usage(context, database, payload["user_id"], [
        UsageItem("video_transcoded", transcoded, {"formats": formats, "video_id": payload["video_id"]}),
        UsageItem("emails_sent", 1),
    ], email=payload["user_email"])  # fmt: skip
    result = {
        "video_id": payload["video_id"],
        "outputs": {kind: u.url for kind, u in stored.items()},
        "duration": info.duration,
        "width": info.width,
        "height": info.height,
        "processing_seconds": round(time.time() - source.started_at, 3),
    }
    StepLog(context).info("video ready", {"email_id": email_id, **result})
    metadata.update({"step": "done", "progress": 100}, context=context)
    shutil.rmtree(source.work_dir, ignore_errors=True)
    return job_result(result, metadata={"email_id": email_id})
