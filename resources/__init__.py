"""Integrations behind one interface each, chosen in one place by the deployment name.

``OFFLOAD_ENV`` unset (or ``local``): everything offline on this machine. ``OFFLOAD_ENV=production``: S3 and
Resend. Secrets are bound with ``dg.EnvVar`` so Dagster resolves them at run time and never shows them;
non-secret settings (bucket prefix, download limits) are plain values so the UI can show them.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from offload import paths
from offload.download import Downloader
from resources.email import EmailSender, OutboxEmail, ResendEmail
from resources.storage import LocalStorage, S3Storage, Storage

__all__ = ["EmailSender", "Storage", "resources_for"]


def _list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def _downloader(file_roots: list[str]) -> Downloader:
    return Downloader(
        allow_hosts=_list("OFFLOAD_FETCH_ALLOW_HOSTS"),
        file_roots=file_roots,
        max_bytes=int(os.environ.get("OFFLOAD_MAX_DOWNLOAD_BYTES", 2 * 1024**3)),
    )


def resources_for(environment: str) -> dict[str, Any]:
    """The resource set of ``local`` or ``production``."""
    if environment not in (paths.LOCAL, paths.PRODUCTION):
        raise ValueError(f"environment: must be 'local' or 'production', got {environment!r}")
    if environment == paths.PRODUCTION:
        return {
            "storage": S3Storage(
                bucket=dg.EnvVar("OFFLOAD_S3_BUCKET"),
                prefix=os.environ.get("OFFLOAD_S3_PREFIX", ""),
                # Region and endpoint come from boto3's own variables (AWS_REGION, AWS_ENDPOINT_URL_S3), the
                # same ones the downloader's s3:// sources use: one setting for both.
            ),
            "email": ResendEmail(
                api_key=dg.EnvVar("RESEND_API_KEY"), from_address=dg.EnvVar("OFFLOAD_EMAIL_FROM")
            ),
            # file:// sources read the server's disk: never in production.
            "downloader": _downloader(file_roots=[]),
        }
    return {
        "storage": LocalStorage(root=str(paths.storage_dir())),
        "email": OutboxEmail(directory=str(paths.outbox_dir())),
        "downloader": _downloader(file_roots=[str(paths.samples_dir()), *_list("OFFLOAD_FILE_ROOTS")]),
    }
