"""What ``cleanup`` removes: one ``Retention`` per kind of item, each with a default age and a cleaner.

A cleaner finds the items last written before a cutoff and removes one item at a time (removing an item
already gone is fine, so a retried step or two cleanups at once do no harm). Adding a kind is one line in
``RETENTIONS``.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import dagster as dg

from offload import paths
from offload.webhooks.inbox import Inbox
from resources.database import AppDatabase
from resources.storage import Storage


@dataclass(frozen=True)
class Expired:
    """An item past its age: ``id`` is what a person recognises (a key, a path, a run id)."""

    id: str
    written_at: dt.datetime
    size: int | None = None


class Cleaner(Protocol):
    def expired(self, before: dt.datetime) -> Iterator[Expired]: ...

    def remove(self, item: Expired) -> None: ...


@dataclass(frozen=True)
class Sources:
    """What cleaners may clean, handed to each ``Retention.make``."""

    storage: Storage
    database: AppDatabase
    inbox: Inbox
    instance: dg.DagsterInstance
    storage_prefixes: tuple[str, ...]
    current_run_id: str


@dataclass(frozen=True)
class Retention:
    name: str
    default_days: int
    description: str
    make: Callable[[Sources], Cleaner]
    min_days: int = 1  # the payload may not ask for less
    min_days_reason: str = ""


class StorageCleaner:
    """Objects under the configured prefixes (``reports/`` by default), by their last write."""

    def __init__(self, storage: Storage, prefixes: tuple[str, ...]):
        self.storage, self.prefixes = storage, prefixes

    def expired(self, before: dt.datetime) -> Iterator[Expired]:
        for prefix in self.prefixes:
            for item in self.storage.list_objects(prefix):
                if item.modified < before:
                    yield Expired(item.key, item.modified, item.size)

    def remove(self, item: Expired) -> None:
        self.storage.delete(item.id)


class OutboxCleaner:
    """Outbox messages: every file under the outbox directory (``.eml`` emails, ``slack/*.json``)."""

    def __init__(self, root: Path):
        self.root = root

    def expired(self, before: dt.datetime) -> Iterator[Expired]:
        if not self.root.is_dir():
            return
        for path in sorted(self.root.rglob("*")):
            if not path.is_file() or path.name.endswith(".partial"):
                continue
            stat = path.stat()
            written = dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC)
            if written < before:
                yield Expired(path.relative_to(self.root).as_posix(), written, stat.st_size)

    def remove(self, item: Expired) -> None:
        (self.root / item.id).unlink(missing_ok=True)


class WorkCleaner:
    """Work directories (one per run) that runs left behind, by the last write of a file inside; never
    the running run's own."""

    def __init__(self, root: Path, current_run_id: str):
        self.root, self.current_run_id = root, current_run_id

    def expired(self, before: dt.datetime) -> Iterator[Expired]:
        if not self.root.is_dir():
            return
        for entry in sorted(self.root.iterdir()):
            if entry.name == self.current_run_id:
                continue
            files = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file()]
            stats = [p.stat() for p in files]
            # The newest file says when the run last worked here; an empty directory, when it was made.
            newest = max(s.st_mtime for s in stats) if stats else entry.stat().st_mtime
            written = dt.datetime.fromtimestamp(newest, dt.UTC)
            if written < before:
                yield Expired(entry.name, written, sum(s.st_size for s in stats))

    def remove(self, item: Expired) -> None:
        path = self.root / item.id
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


class InboxCleaner:
    """Webhook inbox rows whose run finished, by when the event arrived. The row is what makes a
    redelivered event a duplicate, so it must outlive the providers' redelivery window (Stripe retries for
    up to 3 days): ``INBOX_MIN_DAYS``."""

    def __init__(self, inbox: Inbox):
        self.inbox = inbox

    def expired(self, before: dt.datetime) -> Iterator[Expired]:
        for row in self.inbox.finished_before(before):
            yield Expired(f"{row.provider}/{row.event_id}#{row.id}", row.received_at, len(row.body))

    def remove(self, item: Expired) -> None:
        self.inbox.delete_finished(int(item.id.rsplit("#", 1)[1]))


INBOX_MIN_DAYS = 4


class RunCleaner:
    """Finished runs (succeeded, failed, canceled) created before the cutoff, with their event logs,
    through the instance's ``delete_run``. Runs still queued or in progress are never touched."""

    FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]

    def __init__(self, instance: dg.DagsterInstance, current_run_id: str):
        self.instance, self.current_run_id = instance, current_run_id

    def expired(self, before: dt.datetime) -> Iterator[Expired]:
        # The run storage compares naive UTC: hand it UTC.
        records = self.instance.get_run_records(
            filters=dg.RunsFilter(created_before=before.astimezone(dt.UTC), statuses=self.FINISHED),
            ascending=True,
        )
        for record in records:
            if record.dagster_run.run_id != self.current_run_id:
                yield Expired(record.dagster_run.run_id, record.create_timestamp)

    def remove(self, item: Expired) -> None:
        self.instance.delete_run(item.id)


RETENTIONS: tuple[Retention, ...] = (
    Retention("storage", 90, "storage objects under storage_prefixes",
              lambda s: StorageCleaner(s.storage, s.storage_prefixes)),
    Retention("outbox", 30, "outbox messages (emails, Slack) in the data directory",
              lambda s: OutboxCleaner(paths.outbox_dir())),
    Retention("work_files", 7, "work directories runs left behind",
              lambda s: WorkCleaner(paths.work_dir(), s.current_run_id)),
    Retention("runs", 90, "finished run records and their event logs",
              lambda s: RunCleaner(s.instance, s.current_run_id)),
    Retention("webhook_inbox", 14, "webhook inbox rows whose run finished",
              lambda s: InboxCleaner(s.inbox), INBOX_MIN_DAYS,
              "a younger row could still be redelivered (Stripe retries for 3 days)"),
)  # fmt: skip
