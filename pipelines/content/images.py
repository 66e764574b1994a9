"""Generated images: checked to be what they claim before they are stored, and a small preview for the UI.

Pillow opens the file and decodes it fully (``verify`` alone misses truncated data), so a provider that
sends an error page or a broken file fails the step instead of storing it; its decompression-bomb guard
applies.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

FORMATS = {"PNG": ("png", "image/png"), "JPEG": ("jpg", "image/jpeg"), "WEBP": ("webp", "image/webp")}
PREVIEW_WIDTH = 320


class NotAnImage(ValueError):
    """The bytes are not a complete PNG, JPEG or WebP image."""


@dataclass(frozen=True)
class ImageInfo:
    extension: str
    content_type: str
    width: int
    height: int


def inspect(path: Path) -> ImageInfo:
    from PIL import Image, UnidentifiedImageError  # here: Pillow's plugins take a quarter second to load

    try:
        with Image.open(path) as image:
            image.load()
            kind = image.format or ""
            width, height = image.size
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise NotAnImage(str(error) or type(error).__name__) from None
    if kind not in FORMATS:
        raise NotAnImage(f"{kind or 'unknown'} images are not accepted; expected {', '.join(FORMATS)}")
    extension, content_type = FORMATS[kind]
    return ImageInfo(extension, content_type, width, height)


def preview_markdown(path: Path, alt: str) -> str:
    """A small JPEG of the image inlined as Markdown, for run metadata (the original may be megabytes)."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB")
        small.thumbnail((PREVIEW_WIDTH, PREVIEW_WIDTH))
        out = io.BytesIO()
        small.save(out, format="JPEG", quality=80)
    return f"![{alt}](data:image/jpeg;base64,{base64.b64encode(out.getvalue()).decode()})"
