"""What usage costs: each kind is priced per a unit people read on an invoice (minutes, thousands of tokens).

Prices are in the currency's minor units (cents) per priced unit and may have decimals; each invoice line is
rounded half up to a whole minor unit, and the total is the sum of the lines. ``DEFAULT_PRICES`` applies
unless the payload's ``prices`` names another price for a kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from resources.database import UNITS, InvoiceLine


@dataclass(frozen=True)
class PricedUnit:
    size: int  # usage units per priced unit: 60 seconds in a minute
    name: str


PRICED_UNITS = {
    "video_transcoded": PricedUnit(60, "minute"),
    "ai_input_tokens": PricedUnit(1000, "1K tokens"),
    "ai_output_tokens": PricedUnit(1000, "1K tokens"),
    "ai_images": PricedUnit(1, "image"),
    "emails_sent": PricedUnit(1, "email"),
}
assert set(PRICED_UNITS) == set(UNITS), "every usage kind needs a priced unit"

# Minor units (cents) per priced unit.
DEFAULT_PRICES: dict[str, float] = {
    "video_transcoded": 2.0,
    "ai_input_tokens": 0.05,
    "ai_output_tokens": 0.2,
    "ai_images": 4.0,
    "emails_sent": 0.1,
}


def effective_prices(overrides: Mapping[str, float]) -> dict[str, Decimal]:
    return {kind: Decimal(str(overrides.get(kind, price))) for kind, price in DEFAULT_PRICES.items()}


def invoice_lines(usage: Mapping[str, int], prices: Mapping[str, Decimal]) -> list[InvoiceLine]:
    """One line per kind used, in ``PRICED_UNITS`` order."""
    lines = []
    for kind, unit in PRICED_UNITS.items():
        quantity = usage.get(kind, 0)
        if quantity <= 0:
            continue
        billed = Decimal(quantity) / unit.size
        amount = (billed * prices[kind]).quantize(Decimal(1), rounding=ROUND_HALF_UP)
        lines.append(
            InvoiceLine(
                kind=kind,
                quantity=quantity,
                unit=UNITS[kind],
                billed_quantity=_text(billed),
                billed_unit=unit.name,
                unit_price=_text(prices[kind]),
                amount=int(amount),
            )
        )
    return lines


def _text(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros: 12.5, 3, 0.05."""
    text = f"{value.normalize():f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
