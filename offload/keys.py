"""Storage keys and the ids that become part of them.

Keys are generated here, never taken from a payload; an id that becomes part of a key or a file name must
match ``ID_PATTERN`` (no ``/``, ``..``, NUL or spaces), which is checked in this one place.
"""

from __future__ import annotations

import re

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ID_RULE = "must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'"
_ID = re.compile(ID_PATTERN)


def is_valid_id(value: str) -> bool:
    return bool(_ID.fullmatch(value))


def id_rule(value: str) -> str:
    """The body of a payload field validator: ``value`` if it is a safe id, else ``ValueError`` with the
    rule alone (``offload.payload`` names the field and the value in the line it prints)."""
    if not is_valid_id(value):
        raise ValueError(ID_RULE)
    return value


def check_id(field: str, value: str) -> str:
    """Return ``value`` if it is a safe id, else raise ``ValueError`` naming the field and the rule."""
    if not isinstance(value, str) or not is_valid_id(value):
        raise ValueError(f"{field}: {value!r} {ID_RULE}")
    return value


def video_key(user_id: str, video_id: str, extension: str) -> str:
    return f"videos/{check_id('user_id', user_id)}/{check_id('video_id', video_id)}.{extension}"


def thumbnail_key(user_id: str, video_id: str) -> str:
    return f"thumbnails/{check_id('user_id', user_id)}/{check_id('video_id', video_id)}.jpg"


def article_key(user_id: str, article_id: str) -> str:
    return f"articles/{check_id('user_id', user_id)}/{check_id('article_id', article_id)}.md"


def image_key(user_id: str, image_id: str, extension: str) -> str:
    return f"images/{check_id('user_id', user_id)}/{check_id('image_id', image_id)}.{extension}"


_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MONTH = re.compile(r"^\d{4}-\d{2}$")


def report_key(day: str, extension: str) -> str:
    """``reports/daily/2026-03-07.html``: one report per day, written again by a re-run of that day."""
    if not _DAY.fullmatch(day):
        raise ValueError(f"day: {day!r} must be a date like 2026-03-07")
    return f"reports/daily/{day}.{extension}"


def invoice_key(user_id: str, month: str) -> str:
    """``invoices/{user_id}/2026-02.html``: one document per user and month."""
    if not _MONTH.fullmatch(month):
        raise ValueError(f"month: {month!r} must be a month like 2026-02")
    return f"invoices/{check_id('user_id', user_id)}/{month}.html"
