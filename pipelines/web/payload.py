"""The web jobs' payloads and their rules, checked before any step runs."""

from __future__ import annotations

from typing import Annotated

import dagster as dg
from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from offload.payload import check_url
from pipelines.web.extract import selector_error

HTTP_SCHEMES = ("http", "https")
MAX_URLS = 100
METHODS = ("GET", "POST")

WebURL = Annotated[str, AfterValidator(lambda value: check_url(value, HTTP_SCHEMES))]
"""An http:// or https:// URL naming a host; in a list, a bad one is reported with its index."""


class ResilientPayload(dg.Config):
    """The seed's error-handling example: one call to an endpoint that may fail."""

    url: WebURL = Field(description="The endpoint to call: http:// or https://.")
    method: str = Field(default="GET", description="GET or POST.")
    body: str | None = Field(
        default=None, description="JSON sent with POST (Content-Type: application/json)."
    )

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if value.upper() not in METHODS:
            raise ValueError(f"must be one of {', '.join(METHODS)}")
        return value.upper()

    @field_validator("body")
    @classmethod
    def _body(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("method") != "POST":
            raise ValueError("only allowed with method POST")
        return value


class ScrapePayload(dg.Config):
    """Fetch each URL and extract what ``selector`` matches; one result per URL."""

    urls: list[WebURL] = Field(description=f"1 to {MAX_URLS} http:// or https:// URLs.")
    selector: str = Field(description="CSS selector, e.g. 'h1' or 'article a.title'.")
    attribute: str | None = Field(
        default=None, description="Extract this attribute (e.g. 'href') instead of the text."
    )
    max_matches: int = Field(default=100, description="At most this many matches per page (1-1000).")

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        if not 1 <= len(value) <= MAX_URLS:
            raise ValueError(f"must list 1 to {MAX_URLS} URLs, got {len(value)}")
        return value

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        problem = selector_error(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("max_matches")
    @classmethod
    def _max_matches(cls, value: int) -> int:
        if not 1 <= value <= 1000:
            raise ValueError("must be from 1 to 1000")
        return value
