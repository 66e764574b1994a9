"""``batch_processor``'s payload: the items inline, or a JSON Lines file in storage for large inputs."""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import Field, field_validator, model_validator

from resources.storage import key_problem

MAX_BATCH_SIZE = 5000
MAX_DELAY_SECONDS = 7 * 86400


class BatchPayload(dg.Config):
    """Exactly one of ``items`` and ``source``. Inline items count against the 3 MB payload limit, so
    anything big goes to storage first (one JSON value per line) and the payload names its key."""

    items: list[Any] | None = Field(default=None, description="The items themselves (contact records).")
    source: str | None = Field(default=None, description="Storage key of a JSON Lines file of items.")
    batch_size: int = Field(default=500, description=f"Items per batch step, 1-{MAX_BATCH_SIZE}.")
    delay_seconds: float = Field(
        default=0,
        description="Wait this long between batches (a rate limit downstream), 0-604800. A wait over a few "
        "seconds frees the run's worker and slot (offload.wait).",
    )

    @field_validator("source")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        problem = key_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("batch_size")
    @classmethod
    def _batch_size(cls, value: int) -> int:
        if not 1 <= value <= MAX_BATCH_SIZE:
            raise ValueError(f"must be 1-{MAX_BATCH_SIZE}")
        return value

    @field_validator("delay_seconds")
    @classmethod
    def _delay(cls, value: float) -> float:
        if not 0 <= value <= MAX_DELAY_SECONDS:
            raise ValueError(f"must be 0-{MAX_DELAY_SECONDS}")
        return value

    @model_validator(mode="after")
    def _one_input(self) -> BatchPayload:
        if (self.items is None) == (self.source is None):
            raise ValueError("give exactly one of items and source")
        return self
