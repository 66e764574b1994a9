"""The rules of run metadata that both sides share: the step helper that writes it (offload/metadata.py)
and the readers (the client's ``Run.metadata``, ``subscribe``, the gateway's realtime stream). Dagster-free,
so the thin client carries it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

METADATA_TAG = "offload/metadata"  # run tag: the run's metadata document, compact JSON
MAX_BYTES = 64 * 1024  # the whole document, as compact UTF-8 JSON
MAX_KEY_LENGTH = 128


def encode(document: Mapping[str, Any]) -> str:
    """Compact JSON of ``document``; ``ValueError`` over ``MAX_BYTES``."""
    text = json.dumps(document, separators=(",", ":"), allow_nan=False, sort_keys=True)
    size = len(text.encode())
    if size > MAX_BYTES:
        raise ValueError(
            f"metadata: {size:,} bytes of JSON is over the {MAX_BYTES:,}-byte limit; nothing changed"
        )
    return text


def decode(tags: Mapping[str, str]) -> dict[str, Any] | None:
    """The metadata document in a run's tags, or None if the run has none (yet)."""
    text = tags.get(METADATA_TAG)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
