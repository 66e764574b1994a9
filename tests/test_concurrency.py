"""Concurrency declarations: a job's Queue becomes job tags, the client adds per-key and per-level tags,
and the instance's generic rules cover every limit a Queue may declare."""

import pytest

from offload.runtime import concurrency, instance
from offload.runtime.concurrency import Queue, run_tags

VIDEO = Queue("video", key_field="user_id", key_limit=2).job_tags()
BATCH = Queue("batch", limit=2).job_tags()


def test_job_tags_carry_the_limit_in_the_key_and_the_queue_in_the_value():
    assert BATCH == {"offload/queue": "batch", "offload/depth": "0", "offload/limit-2": "batch"}
    assert VIDEO["offload/key_field"] == "user_id" and VIDEO["offload/key_limit"] == "2"


def test_key_comes_from_the_payload_field():
    tags = run_tags(VIDEO, {"user_id": "u7"})
    assert tags == {"offload/depth": "0", "offload/key-limit-2": "video:u7"}


def test_explicit_concurrency_key_wins_over_the_field():
    assert (
        run_tags(VIDEO, {"user_id": "u7"}, concurrency_key="team-1")["offload/key-limit-2"] == "video:team-1"
    )


def test_a_key_without_key_limit_gives_the_key_its_own_copy_of_the_queue_limit():
    assert run_tags(BATCH, {}, concurrency_key="acme")["offload/limit-2"] == "batch:acme"


def test_child_runs_take_slots_of_their_own_level():
    both = Queue("video", limit=5, key_field="user_id", key_limit=2).job_tags()
    tags = run_tags(both, {"user_id": "u7"}, depth=1)
    assert tags == {"offload/depth": "1", "offload/key-limit-2": "video:u7@1", "offload/limit-5": "video@1"}
    assert run_tags(both, {"user_id": "u7"})["offload/limit-5"] == "video"


@pytest.mark.parametrize("tags", [{}, Queue("free").job_tags()])
def test_a_key_for_a_job_without_limits_is_refused(tags):
    with pytest.raises(ValueError, match="concurrency_key"):
        run_tags(tags, {}, concurrency_key="k")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "a b"}, "queue name"),
        ({"name": "q", "limit": 7000}, "limit: 7000 must be one of"),
        ({"name": "q", "key_limit": 0}, "key_limit: 0"),
        ({"name": "q", "key_field": "user_id"}, "needs a key_limit"),
    ],
)
def test_bad_declarations_fail_at_definition_time(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Queue(**kwargs)


def test_embedded_instance_has_a_rule_for_every_supported_limit():
    config = instance.embedded_config()["run_coordinator"]["config"]
    rules = {rule["key"]: rule["limit"] for rule in config["tag_concurrency_limits"]}
    assert rules["offload/depth"] == concurrency.LEVEL_SLOTS
    for limit in concurrency.LIMITS:
        assert rules[f"offload/limit-{limit}"] == limit
        assert rules[f"offload/key-limit-{limit}"] == limit
    assert all(
        rule["value"] == {"applyLimitPerUniqueValue": True} for rule in config["tag_concurrency_limits"]
    )
    assert config["dequeue_interval_seconds"] == 1


def test_every_job_declares_a_queue():
    """Runs of a job without a queue would escape the per-level slots (the only global cap)."""
    from definitions import defs

    for job in defs.resolve_all_job_defs():
        if job.name.startswith("__ASSET_JOB"):  # Dagster's implicit job for materializing from the UI
            continue
        assert job.tags.get("offload/depth") == "0", f"{job.name}: put a Queue's job_tags() in its tags"
