"""Queue limits set at run time (offload/runtime/queues.py): the counter's rules with real DagsterRun
objects, and the store (Dagster's pools) through the ``offload queues`` command on a real SQLite instance.
The daemon and the client applying them to queued runs: tests/test_trigger_options.py."""

from pathlib import Path

import dagster as dg
import pytest

from offload.cli import queues as queues_cli
from offload.runtime import concurrency, instance, queues
from offload.runtime.concurrency import Queue, run_tags

RULES = concurrency.tag_concurrency_limits()


def run(job_tags: dict[str, str], payload: dict | None = None, **options) -> dg.DagsterRun:
    tags = {**job_tags, **run_tags(job_tags, payload or {}, **options)}
    return dg.DagsterRun(job_name="job", tags=tags)


BATCH = Queue("batch", limit=2).job_tags()
VIDEO = Queue("video", key_field="user_id", key_limit=2).job_tags()


def blocked(item: dg.DagsterRun, running: list[dg.DagsterRun], limits: dict[str, int]) -> bool:
    return queues.QueueLimitsCounter(RULES, running, limits).is_blocked(item)


def test_the_declared_limit_holds_without_a_run_time_limit():
    assert not blocked(run(BATCH), [run(BATCH)], {})
    assert blocked(run(BATCH), [run(BATCH), run(BATCH)], {})


def test_a_run_time_limit_raises_and_lowers_the_declared_one():
    two = [run(BATCH), run(BATCH)]
    assert not blocked(run(BATCH), two, {"offload.queue.batch": 3})
    assert blocked(run(BATCH), [*two, run(BATCH)], {"offload.queue.batch": 3})
    assert blocked(run(BATCH), [run(BATCH)], {"offload.queue.batch": 1})
    assert not blocked(run(BATCH), two, {"offload.queue.other": 9} | {"offload.queue.batch": 2000})


def test_it_applies_per_nesting_level_and_per_key():
    children = [run(BATCH, depth=1)]
    assert blocked(run(BATCH, depth=1), children, {"offload.queue.batch": 1})
    assert not blocked(run(BATCH), children, {"offload.queue.batch": 1})  # another level's slots
    same_user = [run(VIDEO, {"user_id": "u1"}), run(VIDEO, {"user_id": "u1"})]
    assert blocked(run(VIDEO, {"user_id": "u1"}), same_user, {})
    assert not blocked(run(VIDEO, {"user_id": "u1"}), same_user, {"offload.key.video": 3})
    assert not blocked(run(VIDEO, {"user_id": "u2"}), same_user, {"offload.key.video": 2})
    assert blocked(run(VIDEO, {"user_id": "u9"}), same_user, {"offload.queue.video": 2})  # the whole queue
    assert not blocked(run(VIDEO, {"user_id": "u9"}), same_user, {"offload.queue.video": 3})


def test_a_run_time_limit_gives_a_limit_to_a_queue_that_declares_none():
    free = Queue("free").job_tags()  # no limit declared: only the level slots count
    two = [run(free), run(free)]
    assert not blocked(run(free), two, {})
    assert blocked(run(free), two, {"offload.queue.free": 2})
    assert not blocked(run(free), [run(free)], {"offload.queue.free": 2})
    assert not blocked(run(free), two, {"offload.queue.other": 2})  # another queue's limit
    assert not blocked(run(free, depth=1), two, {"offload.queue.free": 2})  # another level's slots
    assert blocked(run(free, depth=1), [run(free, depth=1)], {"offload.queue.free": 1})


def test_other_rules_still_hold():
    level = [run(BATCH, depth=0)] * concurrency.LEVEL_SLOTS
    free = Queue("free").job_tags()
    assert blocked(run(free), level, {"offload.queue.batch": 100})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["set", "batch", "0"], "limit: 0 must be a whole number from 1 to 10,000"),
        (["set", "a b", "3"], "queue name: 'a b'"),
    ],
)
def test_bad_limits_are_refused_and_change_nothing(argv, message, home, capsys):
    assert queues_cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert queues_cli.main(["list"]) == 0 and capsys.readouterr().out == ""


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "dagster.yaml").write_text(instance.render(instance.embedded_config()))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    return tmp_path


def test_set_list_clear_through_the_command(home, capsys):
    assert queues_cli.main(["set", "batch", "7"]) == 0
    assert queues_cli.main(["set", "video", "3", "--per-key"]) == 0
    capsys.readouterr()
    assert queues_cli.main(["list"]) == 0
    assert sorted(capsys.readouterr().out.splitlines()) == ["batch\t7", "video\t3 per key"]
    with dg.DagsterInstance.get() as dagster:
        assert queues.read_limits(dagster) == {"offload.queue.batch": 7, "offload.key.video": 3}
    assert queues_cli.main(["clear", "batch"]) == 0
    with dg.DagsterInstance.get() as dagster:
        assert queues.read_limits(dagster) == {"offload.key.video": 3}
