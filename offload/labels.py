"""The tags a person finds a run by in the Dagster UI: the ids in its payload (``video_id``, ``user_id``,
``event_id``...), each as a tag named after its field, next to the ``offload/*`` tags the framework keeps
for itself (queues, idempotency, retries).

Only top-level fields whose name ends in ``_id`` and whose value is a short string or whole number become
labels: ids are what the jobs' payload rules already restrict to safe characters, and are meant to be seen;
other fields (emails, URLs, prompts) stay in the run config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from offload.redaction import redact

MAX_LABEL_CHARS = 64
_ID_FIELD = re.compile(r"^[a-z][a-z0-9_]{0,60}_id$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9_.:@+-]+$")


def label_tags(payload: Mapping[str, Any]) -> dict[str, str]:
    """``{field: value}`` for each id field of ``payload`` (see the module docstring), in payload order."""
    labels = {}
    for field, value in payload.items():
        if not isinstance(field, str) or not _ID_FIELD.match(field) or isinstance(value, bool):
            continue
        text = str(value) if isinstance(value, int | str) else ""
        # A configured secret's value is never shown: tags are in the UI.
        if 0 < len(text) <= MAX_LABEL_CHARS and _LABEL_VALUE.match(text) and redact(text) == text:
            labels[field] = text
    return labels
