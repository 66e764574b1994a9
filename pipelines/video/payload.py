"""The video pipeline's payload: what a caller sends, and the rules it must meet before any step runs."""

from __future__ import annotations

import dagster as dg
from pydantic import Field, field_validator

from offload.keys import id_rule
from offload.payload import check_email, check_url
from pipelines.video.media import FORMATS

URL_SCHEMES = ("http", "https", "file", "s3")


class _VideoSource(dg.Config):
    """The fields every video job takes, with their rules."""

    video_id: str = Field(description="Your id for the video; becomes part of storage keys.")
    video_url: str = Field(description="Where to fetch the source: http(s)://, file:// or s3://bucket/key.")
    user_id: str = Field(description="Owner of the video; becomes part of storage keys.")
    user_email: str = Field(description="Who is emailed the links when the outputs are ready.")

    @field_validator("video_id", "user_id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        return id_rule(value)

    @field_validator("video_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value, URL_SCHEMES)

    @field_validator("user_email")
    @classmethod
    def _email(cls, value: str) -> str:
        return check_email(value)


class VideoPayload(_VideoSource):
    """Process one uploaded video: transcode to ``formats``, thumbnail, store, and email the user."""

    formats: list[str] = Field(default=["mp4", "webm"], description="Any of mp4, webm, gif.")

    @field_validator("formats")
    @classmethod
    def _formats(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(FORMATS))
        if unknown:
            raise ValueError(f"{', '.join(unknown)} not supported; choose from {', '.join(FORMATS)}")
        if not value:
            raise ValueError("must name at least one format")
        return [fmt for fmt in FORMATS if fmt in value]  # canonical order, duplicates dropped


class SingleFormatPayload(_VideoSource):
    """The seed's ``process_video``: one source, one output format."""

    format: str = Field(default="mp4", description="One of mp4, webm, gif.")

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value not in FORMATS:
            raise ValueError(f"must be one of {', '.join(FORMATS)}")
        return value

    def as_video_payload(self) -> VideoPayload:
        return VideoPayload(**self.model_dump(exclude={"format"}), formats=[self.format])
