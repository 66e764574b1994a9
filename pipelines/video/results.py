"""What a video run shows in the Dagster UI without opening its JSON: the thumbnail as an image and each
output's link, as the ``upload`` step's output metadata.

A presigned S3 link is shown as a link with the time it stops working; a local file is shown as its path
(a browser does not follow ``file://`` links from the UI's page), as a path value Dagster offers to copy.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import dagster as dg


class Output(Protocol):
    """A stored output (``steps.Uploaded``), read only."""

    @property
    def url(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def expires_at(self) -> dt.datetime | None: ...
    @property
    def path(self) -> str | None: ...


def results_metadata(stored: Mapping[str, Output], thumbnail_file: Path | None) -> dict[str, Any]:
    """``results`` (Markdown: the thumbnail inline, a row per output), ``<kind>_url`` or ``<kind>_path`` per
    output, ``<kind>_bytes``, and ``links_expire_at`` when the links are presigned."""
    metadata: dict[str, Any] = {"results": dg.MetadataValue.md(results_markdown(stored, thumbnail_file))}
    for kind, output in stored.items():
        if output.path is not None:
            metadata[f"{kind}_path"] = dg.MetadataValue.path(output.path)
        else:
            metadata[f"{kind}_url"] = dg.MetadataValue.url(output.url)
        metadata[f"{kind}_bytes"] = output.size
    expiries = [o.expires_at for o in stored.values() if o.expires_at is not None]
    if expiries:
        metadata["links_expire_at"] = dg.MetadataValue.timestamp(min(expiries))
    return metadata


def results_markdown(stored: Mapping[str, Output], thumbnail_file: Path | None) -> str:
    lines = []
    if thumbnail_file is not None and thumbnail_file.is_file():
        inline = base64.b64encode(thumbnail_file.read_bytes()).decode()
        lines += [f"![thumbnail](data:image/jpeg;base64,{inline})", ""]
    lines += ["| output | size | where |", "| --- | ---: | --- |"]
    for kind, output in stored.items():
        where = f"`{output.path}`" if output.path is not None else f"[open]({output.url})"
        lines.append(f"| {kind} | {output.size:,} bytes | {where} |")
    expiries = [o.expires_at for o in stored.values() if o.expires_at is not None]
    if expiries:
        lines += ["", f"The links are presigned and stop working at {min(expiries):%Y-%m-%d %H:%M} UTC."]
    return "\n".join(lines)
