"""Integrations behind one interface each, chosen in one place by the deployment name.

``OFFLOAD_ENV`` unset (or ``local``): everything offline on this machine (local files, email and Slack
outboxes, the app database a SQLite file). ``OFFLOAD_ENV=production``: S3, Resend, Slack's Web API and the
database at ``DATABASE_URL``. The AI resource is the same in
both: OpenAI, or any OpenAI-compatible server at ``OPENAI_BASE_URL`` (a local model server works offline).
Secrets are bound with ``dg.EnvVar`` so Dagster resolves them at run time and never shows them;
non-secret settings (bucket prefix, download limits, model names) are plain values the UI can show.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from offload import paths
from offload.net.download import Downloader
from offload.net.http import HttpClient
from offload.webhooks.inbox import InboxResource
from offload.webhooks.inbox import default_url as inbox_url
from resources.ai import OpenAIResource
from resources.database import AppDatabase, embedded_url
from resources.email import EmailSender, OutboxEmail, ResendEmail
from resources.slack import DEFAULT_CHANNEL, SLACK_DEFAULT_API_URL, OutboxSlack, SlackAPI, SlackNotifier
from resources.storage import LocalStorage, S3Storage, Storage
from resources.sync_table import SqlTable

__all__ = [
    "AppDatabase",
    "EmailSender",
    "OpenAIResource",
    "SlackNotifier",
    "SqlTable",
    "Storage",
    "resources_for",
]


def _list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def _downloader(file_roots: list[str]) -> Downloader:
    return Downloader(
        allow_hosts=_list("OFFLOAD_FETCH_ALLOW_HOSTS"),
        file_roots=file_roots,
        # s3:// sources: none unless configured, e.g. "uploads-bucket/uploads/{user_id}/" (comma-separated).
        s3_sources=_list("OFFLOAD_S3_SOURCES"),
        max_bytes=int(os.environ.get("OFFLOAD_MAX_DOWNLOAD_BYTES", 2 * 1024**3)),
    )


def _http() -> HttpClient:
    """HTTP for jobs that fetch URLs from their payloads; the same allow list as the downloader."""
    return HttpClient(allow_hosts=_list("OFFLOAD_FETCH_ALLOW_HOSTS"))


def _slack_channel() -> str:
    return os.environ.get("OFFLOAD_SLACK_CHANNEL", "").strip() or DEFAULT_CHANNEL


def _env_if_set(name: str) -> Any:
    """``dg.EnvVar(name)`` when the variable is set, else None. For settings where either of two variables
    will do (OpenAI's key or base URL): a bound EnvVar that is unset fails every run that uses the resource,
    while None lets the resource say which one to set."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def required_env(name: str) -> Any:
    """``dg.EnvVar(name)`` when the variable is set, else an empty value: the resource then fails the run
    with "NAME is not set" (``offload.errors.require_settings``). A bound EnvVar that is unset would fail
    inside Dagster's config resolution instead, before offload can tell which setting is missing, and the
    run would be retried as a crash. Read where the run resolves its resources (the run worker imports
    these definitions again), so a variable missing only there is caught too."""
    return dg.EnvVar(name) if os.environ.get(name, "").strip() else ""


# Plain settings of the AI resource, by the variable that sets each; unset ones keep the resource's default.
_OPENAI_SETTINGS = {
    "chat_model": "OPENAI_CHAT_MODEL",
    "image_model": "OPENAI_IMAGE_MODEL",
    "image_size": "OPENAI_IMAGE_SIZE",
    "timeout_seconds": "OPENAI_TIMEOUT_SECONDS",
    "max_retries": "OPENAI_MAX_RETRIES",
}


def _openai() -> OpenAIResource:
    settings: dict[str, Any] = {
        field: os.environ[name] for field, name in _OPENAI_SETTINGS.items() if os.environ.get(name)
    }
    return OpenAIResource(
        api_key=_env_if_set("OPENAI_API_KEY"),
        # A gateway URL can carry a token in its path: bound like a secret, never shown.
        base_url=_env_if_set("OPENAI_BASE_URL"),
        **settings,
    )


def _database(required: bool) -> AppDatabase:
    """``DATABASE_URL``; in the embedded default a SQLite file under the data directory when unset."""
    if required or os.environ.get("DATABASE_URL"):
        return AppDatabase(url=required_env("DATABASE_URL"))
    return AppDatabase(url=embedded_url())


def _sync_tables(database: AppDatabase) -> dict[str, SqlTable]:
    """The tables ``data_pipeline`` syncs: ``OFFLOAD_SYNC_SOURCE_URL`` / ``_TABLE`` (no source: the schedule
    skips), into ``OFFLOAD_SYNC_DESTINATION_URL`` (default: the app database) / ``_TABLE`` (default: the
    source table's name)."""
    source_table = os.environ.get("OFFLOAD_SYNC_SOURCE_TABLE", "").strip() or None
    destination_url = _env_if_set("OFFLOAD_SYNC_DESTINATION_URL")
    destination_variable = "OFFLOAD_SYNC_DESTINATION_URL" if destination_url else "DATABASE_URL"
    return {
        "sync_source": SqlTable(
            url=_env_if_set("OFFLOAD_SYNC_SOURCE_URL"),
            table=source_table,
            url_variable="OFFLOAD_SYNC_SOURCE_URL",
            table_variable="OFFLOAD_SYNC_SOURCE_TABLE",
        ),
        "sync_destination": SqlTable(
            url=destination_url or database.url or None,
            table=os.environ.get("OFFLOAD_SYNC_DESTINATION_TABLE", "").strip() or source_table,
            url_variable=destination_variable,
            table_variable="OFFLOAD_SYNC_DESTINATION_TABLE",
        ),
    }


def _webhook_inbox() -> InboxResource:
    """The gateway's inbox, for the ``webhook_inbox`` sensor: ``OFFLOAD_WEBHOOK_INBOX_URL``, else
    ``DATABASE_URL`` (both may hold a password: bound as secrets), else the SQLite file."""
    for name in ("OFFLOAD_WEBHOOK_INBOX_URL", "DATABASE_URL"):
        if os.environ.get(name, "").strip():
            return InboxResource(url=dg.EnvVar(name))
    return InboxResource(url=inbox_url())


def resources_for(environment: str) -> dict[str, Any]:
    """The resource set of ``local`` or ``production``."""
    if environment not in (paths.LOCAL, paths.PRODUCTION):
        raise ValueError(f"environment: must be 'local' or 'production', got {environment!r}")
    if environment == paths.PRODUCTION:
        return {
            "storage": S3Storage(
                bucket=required_env("OFFLOAD_S3_BUCKET"),
                prefix=os.environ.get("OFFLOAD_S3_PREFIX", ""),
                # Region and endpoint come from boto3's own variables (AWS_REGION, AWS_ENDPOINT_URL_S3), the
                # same ones the downloader's s3:// sources use: one setting for both.
            ),
            "email": ResendEmail(
                api_key=required_env("RESEND_API_KEY"), from_address=required_env("OFFLOAD_EMAIL_FROM")
            ),
            # file:// sources read the server's disk: never in production.
            "downloader": _downloader(file_roots=[]),
            "http": _http(),
            # Like Resend's key, the token is required in production: without it alerts fail loudly (the
            # sensor's tick shows the error) instead of going nowhere.
            "slack": SlackAPI(
                token=required_env("SLACK_BOT_TOKEN"),
                default_channel=_slack_channel(),
                base_url=os.environ.get("OFFLOAD_SLACK_API_URL", "").strip() or SLACK_DEFAULT_API_URL,
            ),
            "openai": _openai(),
            "database": (database := _database(required=True)),
            **_sync_tables(database),
            "webhook_inbox": _webhook_inbox(),
        }
    return {
        "storage": LocalStorage(root=str(paths.storage_dir())),
        "email": OutboxEmail(directory=str(paths.outbox_dir())),
        "downloader": _downloader(file_roots=[str(paths.samples_dir()), *_list("OFFLOAD_FILE_ROOTS")]),
        "http": _http(),
        "slack": OutboxSlack(directory=str(paths.outbox_dir() / "slack"), default_channel=_slack_channel()),
        "openai": _openai(),
        "database": (database := _database(required=False)),
        **_sync_tables(database),
        "webhook_inbox": _webhook_inbox(),
    }
