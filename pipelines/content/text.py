"""Counting and packaging the text the content jobs produce."""

from __future__ import annotations

import re
from typing import Any

import yaml

# Letters or digits, with inner apostrophes (straight or typographic) and hyphens: "don't", "e-mail".
_WORD = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")


def word_count(text: str) -> int:
    """Words as a reader counts them: Markdown marks (``#``, ``-``, ``*``) are not words."""
    return len(_WORD.findall(text))


def markdown_document(front_matter: dict[str, Any], content: str) -> str:
    """The article as a Markdown file with YAML front matter, as static site generators read it."""
    header = yaml.safe_dump(front_matter, sort_keys=False, allow_unicode=True).strip()
    return f"---\n{header}\n---\n\n{content.strip()}\n"


def preview(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."
