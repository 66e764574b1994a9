"""batch_processor in process: 10,000 items from a JSON Lines source in storage with bounded memory,
progress logged per batch, every bad item (bad email, not an object, a line that is not JSON) reported
with its index, results and manifest in storage; payload rules; the per-item normalization."""

import json
import tracemalloc
from pathlib import Path

import dagster as dg
import pytest
from pydantic import ValidationError

from offload.payload import payload_errors
from pipelines.batch import batch_processor, contacts
from pipelines.batch.payload import BatchPayload
from resources import resources_for
from resources.storage import LocalStorage


def run(tmp_path: Path, payload: dict) -> dg.ExecuteInProcessResult:
    return batch_processor.execute_in_process(
        run_config=payload, resources={"storage": LocalStorage(root=str(tmp_path / "storage"))}
    )


def deployed_batch_processor() -> dg.JobDefinition:
    """The job as a deployment runs it (local resources, in-process executor, outputs in files).
    ``execute_in_process`` would also keep every step's output in memory for its result."""
    defs = dg.Definitions(
        jobs=[batch_processor], resources=resources_for("local"), executor=dg.in_process_executor
    )
    return defs.resolve_job_def("batch_processor")


def test_ten_thousand_items_from_storage_with_bounded_memory(data_dir):
    source = data_dir / "storage" / "inputs" / "contacts.jsonl"
    source.parent.mkdir(parents=True)
    bad = {1234: "not-an-email", 5678: "also bad"}
    notes = "x" * 2000  # ~20 MB of input: twenty times what one batch holds
    with source.open("w") as out:
        for n in range(10_000):
            if n == 4321:
                out.write("{not json\n")
            else:
                item = {"email": bad.get(n, f"User{n}@Example.com"), "name": f" user  {n} ", "notes": notes}
                out.write(json.dumps(item) + "\n")
    with dg.instance_for_test() as instance:
        tracemalloc.start()
        with dg.execute_job(
            dg.reconstructable(deployed_batch_processor),
            instance=instance,
            run_config={"source": "inputs/contacts.jsonl", "batch_size": 500},
        ) as result:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert result.success
            summary = result.output_for_node("summarize")
        progress = [r.user_message for r in instance.all_logs(result.run_id) if "/20 done" in r.user_message]
    assert peak < source.stat().st_size / 3, f"peak {peak:,} bytes: the input was held in memory"
    assert summary["total_processed"] == 9_997 and summary["failed"] == 3 and summary["batches"] == 20
    assert [f["index"] for f in summary["failures"]] == [1234, 4321, 5678]
    assert "line is not JSON" in summary["failures"][1]["error"]
    assert len(progress) == 20 and progress[0].startswith("batch 1/20 done")
    manifest = json.loads(Path(summary["results"].removeprefix("file://")).read_text())
    lines = [
        line
        for results in manifest["results"]
        for line in Path(results["url"].removeprefix("file://")).read_text().splitlines()
    ]
    assert len(lines) == 9_997 and len(manifest["failures"]) == 3
    first = {"index": 0, "email": "user0@example.com", "name": "user 0", "domain": "example.com"}
    assert json.loads(lines[0]) == first


def test_inline_items_and_every_bad_one_reported(tmp_path, data_dir):
    items = [
        {"email": "a@example.com"},
        {"email": "bad"},
        7,
        {"name": "no email"},
        {"email": "b@example.com"},
    ]
    result = run(tmp_path, {"items": items, "batch_size": 2})
    summary = result.output_for_node("summarize")
    assert (summary["total_processed"], summary["failed"], summary["batches"]) == (2, 3, 3)
    assert [f["index"] for f in summary["failures"]] == [1, 2, 3]


@pytest.mark.parametrize(
    ("payload", "line"),
    [
        ({}, "give exactly one of items and source"),
        ({"items": [], "source": "a.jsonl"}, "give exactly one of items and source"),
        ({"source": "../etc/passwd"}, "source = '../etc/passwd': must not contain '.' or '..' segments"),
        ({"items": [1], "batch_size": 0}, "batch_size = 0: must be 1-5000"),
    ],
)
def test_payload_rules(payload, line):
    with pytest.raises(ValidationError) as caught:
        BatchPayload(**payload)
    assert line in payload_errors(caught.value)[0]


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"email": " Ada@Example.COM ", "name": "  Ada   Lovelace "},
         {"email": "ada@example.com", "name": "Ada Lovelace", "domain": "example.com"}),
        ({"email": "x@y.org"}, {"email": "x@y.org", "name": "", "domain": "y.org"}),
    ],
)  # fmt: skip
def test_normalize(item, expected):
    assert contacts.normalize(item) == expected


@pytest.mark.parametrize(
    ("item", "error"),
    [("text", "item: must be an object"), ({}, "email: missing"), ({"email": "nope"}, "email = 'nope'"),
     ({"email": "a@b.co", "name": 5}, "name: must be text")],
)  # fmt: skip
def test_normalize_names_the_field_and_rule(item, error):
    with pytest.raises(ValueError, match=error):
        contacts.normalize(item)
