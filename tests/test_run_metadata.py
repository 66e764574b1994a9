"""Run metadata (offload/metadata.py): set/increment/append/remove/update read back within the run, JSON
and size rules with one-line errors that change nothing, the run's ``offload/metadata`` tag (what the UI,
``Run.metadata`` and the gateway read), and durability across a re-execution from failure (a new run id,
the same root run): the resumed run reads back what its first attempt set."""

import json
import os
from typing import Any

import dagster as dg
import pytest

from offload import metadata
from offload.client.metadata_rules import MAX_BYTES, METADATA_TAG, decode
from offload.client.runs import metadata_of

seen: dict[str, Any] = {}


@dg.op
def publish(context: dg.OpExecutionContext) -> None:
    metadata.set("step", "publish")
    metadata.set("progress", 10)
    metadata.increment("done")
    metadata.increment("done", 2)
    metadata.append("formats", "mp4")
    metadata.append("formats", "webm")
    metadata.append("formats", "gif")
    metadata.remove("formats", "webm")
    metadata.set("gone", True)
    metadata.remove("gone")
    metadata.update({"step": "publish", "progress": 40})
    seen["after_publish"] = metadata.current()
    with pytest.raises(ValueError, match=r"metadata 'bad': value must be JSON"):
        metadata.set("bad", object())
    with pytest.raises(ValueError, match=r"cannot increment 'publish'"):
        metadata.increment("step")
    with pytest.raises(ValueError, match=r"over the 65,536-byte limit; nothing changed"):
        metadata.set("huge", "x" * MAX_BYTES)
    with pytest.raises(ValueError, match=r"metadata key '': must be a string of 1-128"):
        metadata.set("", 1)
    seen["after_errors"] = metadata.current()


@dg.op(ins={"start": dg.In(dg.Nothing)})
def flaky(context: dg.OpExecutionContext) -> None:
    seen.setdefault("flaky_saw", []).append(dict(metadata.current()))
    metadata.increment("attempts_of_flaky")
    if os.environ.get("METADATA_TEST_FAIL") == "1":
        raise RuntimeError("crash")
    metadata.set("progress", 100)


@dg.job(executor_def=dg.in_process_executor)
def metadata_job() -> None:
    flaky(start=publish())


@pytest.fixture
def instance(tmp_path, monkeypatch):
    monkeypatch.setenv("OFFLOAD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("OFFLOAD_METADATA_DB", raising=False)
    seen.clear()
    (tmp_path / "home").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "home")) as opened:
        yield opened


def test_set_increment_append_remove_read_back_and_rules(instance):
    result = dg.execute_job(dg.reconstructable(metadata_job), instance=instance)
    assert result.success
    expected = {"step": "publish", "progress": 40, "done": 3, "formats": ["mp4", "gif"]}
    assert seen["after_publish"] == expected
    assert seen["after_errors"] == expected  # the refused calls changed nothing
    tags = instance.get_run_by_id(result.run_id).tags
    assert decode(tags) == expected | {"progress": 100, "attempts_of_flaky": 1}
    logs = [e.message for e in instance.all_logs(result.run_id) if e.user_message.startswith("metadata")]
    assert any('metadata formats: "gif"' in line for line in logs)


def test_a_resumed_run_reads_back_what_its_first_attempt_set(instance, monkeypatch):
    monkeypatch.setenv("METADATA_TEST_FAIL", "1")
    first = dg.execute_job(dg.reconstructable(metadata_job), instance=instance, raise_on_error=False)
    assert not first.success
    monkeypatch.setenv("METADATA_TEST_FAIL", "0")
    options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
    resumed = dg.execute_job(dg.reconstructable(metadata_job), instance=instance, reexecution_options=options)
    assert resumed.success and resumed.run_id != first.run_id
    # The resumed attempt saw the first attempt's document, including flaky's own increment before it crashed.
    assert seen["flaky_saw"][-1]["attempts_of_flaky"] == 1
    assert seen["flaky_saw"][-1]["formats"] == ["mp4", "gif"]
    record = instance.get_run_by_id(resumed.run_id)
    assert record.root_run_id == first.run_id
    assert decode(record.tags)["attempts_of_flaky"] == 2


def test_metadata_outside_a_step_is_a_clear_error():
    with pytest.raises(RuntimeError, match="call it inside a step"):
        metadata.set("progress", 1)


def test_run_metadata_reads_the_current_attempt_else_the_newest_that_published():
    tagged = {"tags": [{"key": METADATA_TAG, "value": json.dumps({"progress": 50})}]}
    silent = {"tags": []}
    assert metadata_of(silent, [tagged, silent]) == {"progress": 50}
    assert metadata_of(tagged, [tagged]) == {"progress": 50}
    assert metadata_of(silent, [silent]) == {}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_parallel_changes_are_never_lost(backend, tmp_path):
    """Steps of one run change the document at once (a multiprocess executor): every change lands, on
    SQLite and on Postgres (row lock), and a refused change leaves the document as it was."""
    from concurrent.futures import ThreadPoolExecutor

    from benchmarks.support.postgres import temporary_database

    def scenario(url: str) -> None:
        store = metadata.MetadataStore(url)
        try:

            def bump(index: int) -> None:
                store.update("root", f"run-{index % 3}", lambda d: d | {"n": d.get("n", 0) + 1})

            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(bump, range(40)))
            assert store.read("root") == {"n": 40}

            def too_big(document: dict) -> dict:
                return document | {"big": "x" * MAX_BYTES}

            with pytest.raises(ValueError, match="byte limit"):
                store.update("root", "run-0", too_big)
            assert store.read("root") == {"n": 40}
        finally:
            store.close()

    if backend == "sqlite":
        scenario(f"sqlite:///{tmp_path / 'metadata.sqlite3'}")
    else:
        with temporary_database() as url:
            scenario(url)
