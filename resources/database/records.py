"""What the pipelines write to the app database, as plain values: articles, payments, usage."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

# Usage kinds and the unit each is counted in. Quantities are whole numbers of the unit, so an invoice
# multiplies exactly; the invoice turns seconds into minutes and tokens into thousands as it prices them.
UNITS = {
    "ai_input_tokens": "token",
    "ai_output_tokens": "token",
    "ai_images": "image",
    "emails_sent": "email",
    "video_transcoded": "second",
}


@dataclass(frozen=True)
class UsageItem:
    """One kind of consumption of one run family, e.g. ``UsageItem("emails_sent", 1)``."""

    kind: str
    quantity: int
    detail: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in UNITS:
            raise ValueError(f"usage kind: {self.kind!r} is not one of {', '.join(UNITS)}")
        if self.quantity < 0:
            raise ValueError(f"usage quantity: {self.quantity} must not be negative")

    @property
    def unit(self) -> str:
        return UNITS[self.kind]


@dataclass(frozen=True)
class UsageRow:
    user_id: str
    kind: str
    quantity: int
    unit: str
    occurred_at: dt.datetime
    run_id: str
    job_name: str
    detail: dict[str, Any] | None


@dataclass(frozen=True)
class Article:
    id: str
    user_id: str
    run_id: str
    topic: str
    keywords: list[str]
    title: str
    content: str
    meta_description: str
    markdown_key: str
    model: str
    image_key: str | None = None
    created_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


@dataclass(frozen=True)
class Payment:
    """A payment as the provider reports it; written again when its status changes."""

    id: str
    provider: str
    amount: int  # minor units (cents)
    currency: str
    status: str
    occurred_at: dt.datetime
    user_id: str | None = None
    description: str | None = None
    data: dict[str, Any] | None = None


@dataclass(frozen=True)
class InvoiceLine:
    """One usage kind on an invoice: what was used, in the unit it is priced in, and what it costs."""

    kind: str
    quantity: int  # in the usage unit (seconds, tokens, ...)
    unit: str
    billed_quantity: str  # in the priced unit (minutes, thousands of tokens), a decimal as text
    billed_unit: str
    unit_price: str  # minor units per priced unit, a decimal as text
    amount: int  # minor units, rounded half up


@dataclass(frozen=True)
class Invoice:
    """A user's invoice for one calendar month (``month`` = ``YYYY-MM``)."""

    number: str
    user_id: str
    month: str
    period_start: dt.datetime
    period_end: dt.datetime
    currency: str
    total: int  # minor units
    lines: list[InvoiceLine]
    created_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    document_key: str | None = None
    email_id: str | None = None
    emailed_at: dt.datetime | None = None


@dataclass(frozen=True)
class Activity:
    """What happened in the app in a time range, for the daily report."""

    new_users: int
    payments: int
    payments_by_status: dict[str, int]
    revenue: dict[str, int]  # currency -> minor units of succeeded payments
    usage: dict[str, tuple[int, str]]  # kind -> (quantity, unit)
    active_users: int  # users with any usage


@dataclass(frozen=True)
class GithubEvent:
    """A GitHub delivery as the ``github_webhook`` job records it (the id is ``X-GitHub-Delivery``)."""

    delivery_id: str
    event: str
    repository: str
    summary: str
    received_at: dt.datetime
    action: str | None = None
    sender: str | None = None
    url: str | None = None
    data: dict[str, Any] | None = None
    notified_at: dt.datetime | None = None
    slack_ts: str | None = None
