"""The ``data_pipeline`` payload: the scheduled time, and how rows are keyed and ordered."""

from __future__ import annotations

from pydantic import Field, field_validator

from offload.scheduling import ScheduledPayload
from resources.sync_table import IDENTIFIER, IDENTIFIER_RULE

MAX_ROWS = 1_000_000


class SyncPayload(ScheduledPayload):
    """Copy rows of the source table that are new or changed since the last load into the destination."""

    key: str = Field(default="id", description="Column that identifies a row (unique in the source).")
    cursor_column: str = Field(
        default="updated_at",
        description="Column that grows whenever a row is written (a timestamp or a version).",
    )
    max_rows: int = Field(default=10_000, description=f"Rows per run, 1-{MAX_ROWS:,}; the next run goes on.")

    @field_validator("key", "cursor_column")
    @classmethod
    def _column(cls, value: str) -> str:
        if not IDENTIFIER.fullmatch(value):
            raise ValueError(IDENTIFIER_RULE)
        return value

    @field_validator("max_rows")
    @classmethod
    def _max_rows(cls, value: int) -> int:
        if not 1 <= value <= MAX_ROWS:
            raise ValueError(f"must be 1-{MAX_ROWS:,}")
        return value
