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
        kinds = {r.name: r for r in RETENTIONS}
        for name, days in value.items():
            if name not in kinds:
                raise ValueError(f"{name!r} is not one of {', '.join(kinds)}")
            least = kinds[name].min_days
            if not least <= days <= MAX_DAYS:
                why = f": {kinds[name].min_days_reason}" if kinds[name].min_days_reason else ""
                raise ValueError(f"{name}: must be {least}-{MAX_DAYS} days, got {days}{why}")
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
