"""The work done on each item: normalizing a contact record (an import from a CSV export or a CRM).

``normalize`` returns the clean record or raises ``ValueError`` naming the field and the rule; the batch step
reports such an item with its index instead of dropping it.
"""

from __future__ import annotations

from typing import Any

from offload.payload import check_email

MAX_NAME = 200


def normalize(item: Any) -> dict[str, Any]:
    """``{email, name?}`` -> ``{email, name, domain}``: email lower-cased and checked, name tidied."""
    if not isinstance(item, dict):
        raise ValueError(f'item: must be an object like {{"email": ...}}, got {type(item).__name__}')
    email = item.get("email")
    if not isinstance(email, str):
        raise ValueError("email: missing (every item needs one)")
    try:
        email = check_email(email.strip().lower())
    except ValueError as error:
        raise ValueError(f"email = {item['email']!r}: {error}") from None
    name = item.get("name", "")
    if not isinstance(name, str) or len(name) > MAX_NAME:
        raise ValueError(f"name: must be text of at most {MAX_NAME} characters")
    return {"email": email, "name": " ".join(name.split()), "domain": email.rsplit("@", 1)[1]}
