"""Payloads of the AI content jobs and their rules, checked before any run starts."""

from __future__ import annotations

import dagster as dg
from pydantic import Field, field_validator

from offload.keys import id_rule

TONES = ("professional", "casual", "technical")
LENGTHS = {"short": 150, "medium": 500, "long": 1000}  # target words
MAX_TOPIC = 200
MAX_KEYWORD = 60
MAX_KEYWORDS = 20


def _one_line(value: str, limit: int) -> str:
    text = value.strip()
    if not text:
        raise ValueError("must not be empty")
    if len(text) > limit:
        raise ValueError(f"must be at most {limit} characters")
    if any(ord(c) < 32 for c in text):
        raise ValueError("must be one line of text (no control characters)")
    return text


class _Writing(dg.Config):
    """What every content job asks for: a topic, a tone and a length."""

    topic: str = Field(description=f"What to write about (1-{MAX_TOPIC} characters).")
    tone: str = Field(default="professional", description=f"One of {', '.join(TONES)}.")
    length: str = Field(default="medium", description="short (~150 words), medium (~500) or long (~1000).")

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return _one_line(value, MAX_TOPIC)

    @field_validator("tone")
    @classmethod
    def _tone(cls, value: str) -> str:
        if value not in TONES:
            raise ValueError(f"must be one of {', '.join(TONES)}")
        return value

    @field_validator("length")
    @classmethod
    def _length(cls, value: str) -> str:
        if value not in LENGTHS:
            raise ValueError(f"must be one of {', '.join(LENGTHS)}")
        return value

    @property
    def words(self) -> int:
        return LENGTHS[self.length]


def _user_id(value: str | None) -> str | None:
    return value if value is None else id_rule(value)


class GenerateContentPayload(_Writing):
    """One piece of text on a topic, in a tone and a length."""

    user_id: str | None = Field(default=None, description="Who to bill the tokens to (optional).")

    @field_validator("user_id")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        return _user_id(value)


class ContentWorkflowPayload(_Writing):
    """An SEO article with a hero image, saved for the user: outline, article, SEO pass, image, publish."""

    keywords: list[str] = Field(description=f"1-{MAX_KEYWORDS} search keywords to work into the article.")
    user_id: str = Field(description="Owner of the article; becomes part of storage keys.")

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, value: list[str]) -> list[str]:
        cleaned = list(dict.fromkeys(_one_line(k, MAX_KEYWORD) for k in value))  # duplicates dropped
        if not 1 <= len(cleaned) <= MAX_KEYWORDS:
            raise ValueError(f"must name 1-{MAX_KEYWORDS} different keywords, got {len(cleaned)}")
        return cleaned

    @field_validator("user_id")
    @classmethod
    def _user(cls, value: str) -> str:
        return _user_id(value) or value
