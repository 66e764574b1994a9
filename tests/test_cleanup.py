"""``cleanup`` (the ``weekly_cleanup`` job) on a seeded data directory and a temporary Dagster instance: old
and new storage objects (inside and outside the expiring prefixes), outbox emails and Slack messages, work
directories, real runs moved back in time and webhook inbox rows. A dry run removes nothing and reports what
it would remove; a real run removes exactly the old items and reports them; the ages come from the payload;
an unknown kind is refused in one line; a retention added to ``RETENTIONS`` is applied. Inbox rows go only
once their run finished, and never younger than the providers' redelivery window."""

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from offload.webhooks.inbox import SUCCEEDED, InboxResource, Incoming, inbox_table, open_inbox
from pipelines.cleanup import cleanup
from pipelines.cleanup import jobs as cleanup_jobs
from pipelines.cleanup.cleaners import RETENTIONS, Expired, Retention
from pipelines.cleanup.payload import CleanupPayload
from resources.database import AppDatabase
from resources.storage import LocalStorage
from tests.support.runs import output_metadata, set_run_times

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def days_ago(days: float) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


def touch(path: Path, written: dt.datetime, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (written.timestamp(), written.timestamp()))
    return path


@dg.op
def noop() -> None:
    pass


@dg.job
def tiny() -> None:
    noop()


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as test_instance:
        yield test_instance


@pytest.fixture
def seeded(data_dir: Path, instance: dg.DagsterInstance) -> dict[str, list[str]]:
    """Old and new items of every kind; returns the old runs and the kept run."""
    storage = data_dir / "storage"
    touch(storage / "reports/daily/2026-01-01.html", days_ago(100))
    touch(storage / "reports/daily/2026-01-01.png", days_ago(91))
    touch(storage / "reports/daily/2026-11-27.html", days_ago(0.5))
    touch(storage / "videos/u1/v1.mp4", days_ago(400))  # not under an expiring prefix
    outbox = data_dir / "outbox"
    touch(outbox / "old.eml", days_ago(31))
    touch(outbox / "slack/old.json", days_ago(45))
    touch(outbox / "new.eml", days_ago(29))
    touch(data_dir / "work/run-crashed/input.mp4", days_ago(8), "x" * 100)
    touch(data_dir / "work/run-busy/input.mp4", days_ago(1))
    inbox = open_inbox(inbox_url(data_dir))
    for event_id, age, finished in (("evt_old_done", 20, True), ("evt_old_open", 20, False),
                                    ("evt_new_done", 2, True)):  # fmt: skip
        [stored] = inbox.store([Incoming("stripe", event_id, "invoice.paid", "{}", days_ago(age))])
        if finished:
            with inbox.engine.begin() as connection:
                update = sa.update(inbox_table).where(inbox_table.c.id == stored.id)
                connection.execute(update.values(status=SUCCEEDED, finished_at=days_ago(age)))
    runs = [tiny.execute_in_process(instance=instance).run_id for _ in range(3)]
    set_run_times(instance, runs[0], days_ago(120), 1)
    set_run_times(instance, runs[1], days_ago(91), 1)
    return {"old_runs": runs[:2], "kept_runs": runs[2:]}


def inbox_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'webhooks.db'}"


def inbox_events(data_dir: Path) -> list[str]:
    query = sa.select(inbox_table.c.event_id).order_by(inbox_table.c.id)
    with open_inbox(inbox_url(data_dir)).engine.connect() as connection:
        return list(connection.execute(query).scalars())


def run_cleanup(instance, data_dir, **payload) -> dg.ExecuteInProcessResult:
    resources = {
        "storage": LocalStorage(root=str(data_dir / "storage")),
        "database": AppDatabase(url=f"sqlite:///{data_dir / 'app.db'}"),
        "webhook_inbox": InboxResource(url=inbox_url(data_dir)),
    }
    return cleanup.execute_in_process(
        run_config={"timestamp": NOW.isoformat(), **payload}, resources=resources, instance=instance
    )


def files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".db" not in p.name
    )


def run_ids(instance: dg.DagsterInstance) -> set[str]:
    return {
        record.dagster_run.run_id
        for record in instance.get_run_records()
        if record.dagster_run.job_name == "tiny"
    }


EXPECTED_OLD = {
    "storage": ["reports/daily/2026-01-01.html", "reports/daily/2026-01-01.png"],
    "outbox": ["old.eml", "slack/old.json"],
    "work_files": ["run-crashed"],
    "webhook_inbox": ["stripe/evt_old_done#1"],
}


def test_a_dry_run_removes_nothing_and_reports_then_a_real_run_removes_exactly_the_old_items(
    instance, data_dir, seeded
):
    before_files, before_runs = files(data_dir), run_ids(instance)

    result = run_cleanup(instance, data_dir, dry_run=True)

    assert files(data_dir) == before_files
    assert run_ids(instance) == before_runs
    report = result.output_for_node("apply_retention")
    assert report["dry_run"] is True
    for kind, items in EXPECTED_OLD.items():
        assert report["kinds"][kind]["items"] == items
        assert (report["kinds"][kind]["found"], report["kinds"][kind]["removed"]) == (len(items), 0)
    assert sorted(report["kinds"]["runs"]["items"]) == sorted(seeded["old_runs"])
    assert report["kinds"]["work_files"]["bytes"] == 100
    metadata = output_metadata(result, "apply_retention")
    assert (metadata["runs_found"], metadata["runs_removed"], metadata["dry_run"]) == (2, 0, True)
    assert "| outbox | 30 |" in metadata["report"]

    result = run_cleanup(instance, data_dir)

    assert files(data_dir) == [
        "outbox/new.eml",
        "storage/reports/daily/2026-11-27.html",
        "storage/videos/u1/v1.mp4",
        "work/run-busy/input.mp4",
    ]
    assert not (data_dir / "work/run-crashed").exists()
    assert run_ids(instance) == set(seeded["kept_runs"])
    assert inbox_events(data_dir) == ["evt_old_open", "evt_new_done"]  # not finished; too young
    for run_id in seeded["old_runs"]:
        assert instance.get_run_by_id(run_id) is None
        assert instance.all_logs(run_id) == []  # the event log went with the run
    report = result.output_for_node("apply_retention")
    assert {kind: r["removed"] for kind, r in report["kinds"].items()} == {
        "storage": 2, "outbox": 2, "work_files": 1, "runs": 2, "webhook_inbox": 1}  # fmt: skip

    again = run_cleanup(instance, data_dir)  # nothing left to remove

    assert {kind: r["found"] for kind, r in again.output_for_node("apply_retention")["kinds"].items()} == {
        "storage": 0, "outbox": 0, "work_files": 0, "runs": 0, "webhook_inbox": 0}  # fmt: skip


def test_ages_come_from_the_payload(instance, data_dir, seeded):
    result = run_cleanup(
        instance, data_dir, retention_days={"outbox": 365, "storage": 1, "runs": 100},
        storage_prefixes=["reports/", "videos/"],
    )  # fmt: skip

    kinds = result.output_for_node("apply_retention")["kinds"]
    assert kinds["outbox"]["removed"] == 0
    assert kinds["storage"]["items"] == [
        "reports/daily/2026-01-01.html", "reports/daily/2026-01-01.png", "videos/u1/v1.mp4"]  # fmt: skip
    assert kinds["runs"]["items"] == [seeded["old_runs"][0]]  # 120 days old; the 91-day one stays


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"retention_days": {"inbox": 3}}, "'inbox' is not one of storage, outbox, work_files, runs, web"),
        ({"retention_days": {"webhook_inbox": 3}}, "webhook_inbox: must be 4-36500 days, got 3: a younger"),
        ({"retention_days": {"runs": 0}}, "runs: must be 1-36500 days, got 0"),
        ({"storage_prefixes": ["reports"]}, "must name a folder, ending in '/'"),
        ({"storage_prefixes": ["../"]}, "must not contain '.' or '..' segments"),
    ],
)
def test_payload_rules(fields, message):
    with pytest.raises(ValueError, match=message):
        CleanupPayload(timestamp=NOW.isoformat(), **fields)


class ListCleaner:
    """A kind of item kept in a list."""

    items = [Expired("evt_old", days_ago(20)), Expired("evt_new", days_ago(2))]

    def expired(self, before):
        return (item for item in self.items if item.written_at < before)

    def remove(self, item):
        self.items.remove(item)


def test_a_new_retention_is_one_line(instance, data_dir, monkeypatch):
    exports = Retention("exports", 14, "old exports", lambda sources: ListCleaner())
    monkeypatch.setattr(cleanup_jobs, "RETENTIONS", (*RETENTIONS, exports))

    result = run_cleanup(instance, data_dir)

    assert result.output_for_node("apply_retention")["kinds"]["exports"]["items"] == ["evt_old"]
    assert [item.id for item in ListCleaner.items] == ["evt_new"]
