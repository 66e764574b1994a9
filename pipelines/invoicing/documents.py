"""An invoice as an HTML document: stored in storage and sent as the email's body, and its lines as text for
the email's plain part.

The invoice row keeps exact decimals (what the amount was computed from); what people read is rounded to
two decimals, with the unit in the plural where the quantity is not one, and unit prices in the invoice's
currency rather than in its minor units.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from offload.templates import HtmlTemplate
from resources.database import Invoice

TEMPLATE = HtmlTemplate(
    """<!doctype html>
<html><head><meta charset="utf-8"><title>Invoice {{ invoice.number }}</title>
<style>
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; color: #222; max-width: 760px; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 6px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tfoot td { font-weight: bold; border-bottom: none; }
</style></head>
<body>
<h1>Invoice {{ invoice.number }}</h1>
<p>Account: {{ invoice.user_id }}<br>
Period: {{ period }}<br>
Issued: {{ invoice.created_at.date() }}</p>
<table>
<thead><tr><th>usage</th><th>quantity</th><th>unit price ({{ currency }})</th><th>amount ({{ currency }})</th>
</tr></thead>
<tbody>
{% for line in lines %}
<tr><td>{{ line.usage }}</td><td>{{ line.quantity }}</td><td>{{ line.unit_price }}</td>
<td>{{ line.amount }}</td></tr>
{% endfor %}
</tbody>
<tfoot><tr><td colspan="3">Total</td><td>{{ money(invoice.total) }}</td></tr></tfoot>
</table>
</body></html>
"""
)


# Singular -> plural of the units an invoice names (usage units and priced units).
PLURALS = {"second": "seconds", "minute": "minutes", "token": "tokens", "image": "images", "email": "emails"}
CENT = Decimal("0.01")


@dataclass(frozen=True)
class LineText:
    """One invoice line as people read it."""

    usage: str  # "video transcoded (245 seconds)"
    quantity: str  # "4.08 minutes", "12K tokens"
    unit_price: str  # "0.10 / minute", in the invoice's currency
    amount: str  # "0.41"


def money(minor: int) -> str:
    """Minor units as a two-decimal amount (the currencies offload bills in have cents)."""
    return f"{minor / 100:,.2f}"


def counted(quantity: Decimal | int, unit: str) -> str:
    """``quantity unit``: the unit in the plural unless the quantity is one, a ``1K tokens`` unit as ``12K
    tokens``; decimals rounded half up to two places (a nonzero amount below that shows as ``< 0.01``)."""
    shown = _decimal_text(Decimal(quantity).quantize(CENT, rounding=ROUND_HALF_UP))
    if shown == "0" and quantity != 0:
        shown = "< 0.01"
    if unit.startswith("1K "):
        return f"{shown}K {unit[3:]}"
    return f"{shown} {unit if Decimal(quantity) == 1 else PLURALS.get(unit, unit)}"


def unit_price(minor_per_unit: str, unit: str) -> str:
    """A price in minor units per priced unit as the currency's amount: ``10`` -> ``0.10 / minute``,
    ``0.05`` per ``1K tokens`` -> ``0.0005 / 1K tokens`` (two decimals, more where the price has them)."""
    major = Decimal(minor_per_unit) / 100
    text = _decimal_text(major)
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')} / {unit}"


def line_texts(invoice: Invoice) -> list[LineText]:
    return [
        LineText(
            usage=f"{line.kind.replace('_', ' ')} ({counted(line.quantity, line.unit)})",
            quantity=counted(Decimal(line.billed_quantity), line.billed_unit),
            unit_price=unit_price(line.unit_price, line.billed_unit),
            amount=money(line.amount),
        )
        for line in invoice.lines
    ]


def invoice_text(invoice: Invoice) -> str:
    """The invoice as plain text, for the email's text part."""
    currency = invoice.currency.upper()
    rows = [f"Invoice {invoice.number} for {_period(invoice)}, account {invoice.user_id}", ""]
    rows += [
        f"- {line.usage}: {line.quantity} at {currency} {line.unit_price} = {currency} {line.amount}"
        for line in line_texts(invoice)
    ]
    rows += ["", f"Total: {currency} {money(invoice.total)}"]
    return "\n".join(rows) + "\n"


def invoice_html(invoice: Invoice) -> str:
    return TEMPLATE.render(
        invoice=invoice,
        currency=invoice.currency.upper(),
        money=money,
        period=_period(invoice),
        lines=line_texts(invoice),
    )


def _period(invoice: Invoice) -> str:
    return dt.date.fromisoformat(f"{invoice.month}-01").strftime("%B %Y")


def _decimal_text(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros, thousands separated: 12.5, 3, 0.0005, 12,000."""
    text = f"{value.normalize():,f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
