"""An invoice as an HTML document: stored in storage and sent as the email's body."""

from __future__ import annotations

import datetime as dt

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
<thead><tr><th>usage</th><th>quantity</th><th>unit price</th><th>amount ({{ currency }})</th></tr></thead>
<tbody>
{% for line in invoice.lines %}
<tr><td>{{ line.kind | replace('_', ' ') }} ({{ line.quantity }} {{ line.unit }}s)</td>
<td>{{ line.billed_quantity }} {{ line.billed_unit }}</td>
<td>{{ line.unit_price }} / {{ line.billed_unit }} (minor units)</td>
<td>{{ money(line.amount) }}</td></tr>
{% endfor %}
</tbody>
<tfoot><tr><td colspan="3">Total</td><td>{{ money(invoice.total) }}</td></tr></tfoot>
</table>
</body></html>
"""
)


def money(minor: int) -> str:
    """Minor units as a two-decimal amount (the currencies offload bills in have cents)."""
    return f"{minor / 100:,.2f}"


def invoice_html(invoice: Invoice) -> str:
    period = dt.date.fromisoformat(f"{invoice.month}-01").strftime("%B %Y")
    return TEMPLATE.render(invoice=invoice, currency=invoice.currency.upper(), money=money, period=period)
