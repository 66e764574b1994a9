"""Video processing: real FFmpeg transcodes of uploaded videos."""

from pipelines.video.jobs import process_video, video_pipeline

__all__ = ["process_video", "video_pipeline"]
