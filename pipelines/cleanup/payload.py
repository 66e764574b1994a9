"""The ``cleanup`` payload: as of when, how old each kind of item may get, and whether to only report."""

from __future__ import annotations

from pydantic import Field, field_validator

from offload.scheduling import ScheduledPayload
from pipelines.cleanup.cleaners import RETENTIONS
from resources.storage import check_key

MAX_DAYS = 36_500


class CleanupPayload(ScheduledPayload):
    """Remove what is older than its retention as of ``timestamp``; ``dry_run`` only reports it."""

    dry_run: bool = Field(default=False, description="Report what would be removed; remove nothing.")
    retention_days: dict[str, int] = Field(
        default_factory=dict,
        description="Days to keep each kind, overriding its default: "
        + ", ".join(f"{r.name} ({r.default_days})" for r in RETENTIONS),
    )
    storage_prefixes: list[str] = Field(
        default_factory=lambda: ["reports/"],
        description="Storage folders whose objects expire (user outputs and invoices are not, by default).",
    )

    @field_validator("retention_days")
    @classmethod
    def _days(cls, value: dict[str, int]) -> dict[str, int]:
        names = [r.name for r in RETENTIONS]
        for name, days in value.items():
            if name not in names:
                raise ValueError(f"{name!r} is not one of {', '.join(names)}")
            if not 1 <= days <= MAX_DAYS:
                raise ValueError(f"{name}: must be 1-{MAX_DAYS} days, got {days}")
        return value

    @field_validator("storage_prefixes")
    @classmethod
    def _prefixes(cls, value: list[str]) -> list[str]:
        for prefix in value:
            if not prefix.endswith("/"):
                raise ValueError(f"{prefix!r} must name a folder, ending in '/' (e.g. reports/)")
            check_key(prefix[:-1], "storage prefix")
        return value

    def days(self, name: str, default: int) -> int:
        return self.retention_days.get(name, default)
