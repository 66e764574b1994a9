"""offload/runtime/max_runtime.py: the one way jobs declare a max runtime, how a run's limit is read (as
Dagster's
monitor reads it), and the failure wording "exceeded max runtime of N s"."""

import dagster as dg
import pytest

from offload.runtime.max_runtime import (
    MAX_RUNTIME_TAG,
    is_over,
    max_runtime,
    max_runtime_message,
    max_runtime_of,
)


def test_max_runtime_returns_dagsters_tag():
    assert max_runtime(3600) == {"dagster/max_runtime": "3600"}
    assert MAX_RUNTIME_TAG == "dagster/max_runtime"


def test_a_job_declares_its_limit_with_the_helper():
    @dg.op
    def noop() -> None: ...

    @dg.job(tags=max_runtime(90))
    def limited() -> None:
        noop()

    assert max_runtime_of(limited.tags) == 90


@pytest.mark.parametrize("bad", [0, -5, 1.5, "60", True, None])
def test_max_runtime_refuses_anything_but_positive_whole_seconds(bad):
    with pytest.raises(ValueError, match=r"^max_runtime: must be a whole number of seconds > 0, got "):
        max_runtime(bad)


@pytest.mark.parametrize(
    ("tags", "default", "limit"),
    [
        ({}, 0, None),  # no default limit
        ({}, 600, 600),  # the instance-wide setting
        ({"dagster/max_runtime": "30"}, 600, 30),  # the tag wins
        ({"dagster/max_runtime_seconds": "45"}, 0, 45),  # the alias Dagster also reads
        ({"dagster/max_runtime": "2.5"}, 0, 2.5),
        ({"dagster/max_runtime": "soon"}, 0, None),  # unparsable: no limit, as in Dagster
        ({"dagster/max_runtime": "0"}, 0, None),
    ],
)
def test_max_runtime_of_reads_tags_like_dagsters_monitor(tags, default, limit):
    assert max_runtime_of(tags, default) == limit


@pytest.mark.parametrize(
    ("start", "limit", "now", "over"),
    [
        (100.0, 10, 111.0, True),
        (100.0, 10, 110.0, False),
        (None, 10, 500.0, False),
        (100.0, None, 1e9, False),
    ],
)
def test_is_over(start, limit, now, over):
    assert is_over(start, limit, now) is over


@pytest.mark.parametrize(
    ("limit", "text"),
    [
        (2, "exceeded max runtime of 2 s"),
        (2.0, "exceeded max runtime of 2 s"),
        (2.5, "exceeded max runtime of 2.5 s"),
        (86400, "exceeded max runtime of 86400 s"),
    ],
)
def test_max_runtime_message(limit, text):
    assert max_runtime_message(limit) == text
