"""The video pipeline's payload: what a caller sends, and the rules it must meet before any step runs."""

from __future__ import annotations

from urllib.parse import urlsplit

import dagster as dg
from pydantic import Field, field_validator

from offload.keys import ID_RULE, is_valid_id
from offload.payload import check_email
from pipelines.video.media import FORMATS

URL_SCHEMES = ("http", "https", "file", "s3")
MAX_URL_LENGTH = 2048


def _check_url(value: str) -> str:
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"must be at most {MAX_URL_LENGTH} characters")
    parts = urlsplit(value)
    if parts.scheme not in URL_SCHEMES:
        raise ValueError(f"must be a URL with scheme {', '.join(URL_SCHEMES)}")
    if parts.scheme in ("http", "https", "s3") and not parts.hostname:
        raise ValueError(f"must name a host after {parts.scheme}://")
    if parts.scheme == "file" and not parts.path:
        raise ValueError("must name a path after file://")
    return value


class _VideoSource(dg.Config):
    """The fields every video job takes, with their rules."""

    video_id: str = Field(description="Your id for the video; becomes part of storage keys.")
    video_url: str = Field(description="Where to fetch the source: http(s)://, file:// or s3://bucket/key.")
    user_id: str = Field(description="Owner of the video; becomes part of storage keys.")
    user_email: str = Field(description="Who is emailed the links when the outputs are ready.")

    @field_validator("video_id", "user_id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        if not is_valid_id(value):
            raise ValueError(ID_RULE)
        return value

    @field_validator("video_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)

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
