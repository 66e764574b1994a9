"""The ``invoicing`` payload: the scheduled time (the month before it is billed), currency and prices."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator

from offload.scheduling import ScheduledPayload
from pipelines.invoicing.prices import DEFAULT_PRICES


class InvoicingPayload(ScheduledPayload):
    """Invoice every user's usage of the calendar month before ``timestamp`` (in ``timezone``)."""

    currency: str = Field(default="usd", description="ISO 4217 code of the prices, lower case.")
    prices: dict[str, float] = Field(
        default_factory=dict,
        description="Minor units per priced unit, overriding the defaults: "
        + ", ".join(f"{kind} {price}" for kind, price in DEFAULT_PRICES.items()),
    )

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z]{3}", value):
            raise ValueError("must be a 3-letter ISO 4217 code in lower case, e.g. usd")
        return value

    @field_validator("prices")
    @classmethod
    def _prices(cls, value: dict[str, float]) -> dict[str, float]:
        for kind, price in value.items():
            if kind not in DEFAULT_PRICES:
                raise ValueError(f"{kind!r} is not one of {', '.join(DEFAULT_PRICES)}")
            if not 0 <= price < 1_000_000_000:
                raise ValueError(f"{kind}: must be a price of 0 or more minor units, got {price}")
        return value

    def billed_month(self) -> tuple[str, dt.datetime, dt.datetime]:
        """``(YYYY-MM, start, end)`` of the calendar month before ``timestamp``, as local midnights."""
        zone = ZoneInfo(self.timezone)
        at = self.scheduled_at
        end = dt.datetime(at.year, at.month, 1, tzinfo=zone)
        last_day = end - dt.timedelta(days=1)
        start = dt.datetime(last_day.year, last_day.month, 1, tzinfo=zone)
        return f"{start:%Y-%m}", start, end
