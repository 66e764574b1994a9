"""``video_pipeline`` (the seed's multi-format job) and ``process_video`` (its single-format sibling).

Both are one graph: download -> probe -> (thumbnail, one transcode per format in parallel) -> upload ->
notify. The run config is the payload itself (see ``offload.payload``).
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from offload.payload import payload_mapping
from offload.runtime.concurrency import Queue
from pipelines.video.payload import SingleFormatPayload, VideoPayload
from pipelines.video.steps import download, notify, probe, thumbnail, transcode, upload

# Both video jobs share one queue: at most two of a user's videos transcode at once, so one user's
# upload burst cannot take every worker.
QUEUE = Queue("video", key_field="user_id", key_limit=2)


@dg.graph
def process_video_graph() -> Any:
    source = download()
    info, formats = probe(source)
    thumb = thumbnail(source, info)
    renditions = formats.map(lambda fmt: transcode(fmt, source, info)).collect()
    stored = upload(source, info, thumb, renditions)
    return notify(source, info, stored)


def _video_run_config(payload: VideoPayload) -> dict[str, Any]:
    return {"ops": {"download": {"config": payload.model_dump()}}}


def _single_run_config(payload: SingleFormatPayload) -> dict[str, Any]:
    return _video_run_config(payload.as_video_payload())


video_pipeline = process_video_graph.to_job(
    name="video_pipeline",
    description="Transcode a video to mp4/webm/gif, thumbnail it, store the outputs, email the user.",
    config=payload_mapping(VideoPayload, _video_run_config),
    tags={"offload/kind": "video", **QUEUE.job_tags()},
)

process_video = process_video_graph.to_job(
    name="process_video",
    description="The seed's single-format video job: one source, one output format.",
    config=payload_mapping(SingleFormatPayload, _single_run_config),
    tags={"offload/kind": "video", **QUEUE.job_tags()},
)
