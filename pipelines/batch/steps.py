"""``batch_processor``'s steps: split the input into batches (fan-out), process each batch, summarize
(fan-in). Only one batch of items is in memory at a time: ``split`` streams the source and hands each batch
to the IO manager as soon as it is full, and each ``process_batch`` writes its results to storage.

With ``delay_seconds``, batch N starts no sooner than ``(N - 1) * delay_seconds`` after the split, as the
seed waits between batches: ``process_batch`` waits first (``offload.wait.until``, a durable wait), so the
run holds no worker and no slot in between, and nothing of the batch runs twice on resume."""

import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from offload import metadata, paths, wait
from offload.log import StepLog
from offload.result import job_result
from pipelines.batch import contacts
from pipelines.batch.payload import BatchPayload
from resources.storage import Storage

FAILURES_IN_RESULT = 20  # the result shows the first few; the manifest in storage has them all


@dataclass(frozen=True)
class Batch:
    """Items ``start`` .. ``start + len(items) - 1`` of the input; ``unreadable``: input lines that were not
    JSON, by index, reported like any other bad item."""

    number: int
    of: int
    start: int
    items: list[Any]
    unreadable: dict[int, str] = field(default_factory=dict)
    not_before: float = 0.0  # Unix time: with a delay between batches, the batch waits until then


@dataclass(frozen=True)
class BatchReport:
    number: int
    processed: int
    failures: list[dict[str, Any]]
    results_key: str
    results_url: str


def _source_lines(path: Path) -> Iterator[tuple[Any, str | None]]:
    """Each non-blank line of a JSON Lines file: ``(value, None)``, or ``(None, error)`` if it is not JSON."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if not line.strip():
                continue
            try:
                yield json.loads(line), None
            except json.JSONDecodeError as error:
                yield None, f"line is not JSON: {error.msg} at column {error.colno}"


def _count_lines(path: Path) -> int:
    with path.open(encoding="utf-8", errors="replace") as lines:
        return sum(1 for line in lines if line.strip())


@dg.op(out=dg.DynamicOut(Batch))
def split(
    context: dg.OpExecutionContext, config: BatchPayload, storage: Storage
) -> Iterator[dg.DynamicOutput]:
    """Cut the input into batches of ``batch_size``, streaming a storage source line by line."""
    log = StepLog(context)
    if config.items is not None:
        entries: Iterator[tuple[Any, str | None]] = ((item, None) for item in config.items)
        total = len(config.items)
    else:
        assert config.source is not None
        work = paths.work_dir() / context.run_id
        work.mkdir(parents=True, exist_ok=True)
        source = storage.get_file(config.source, work / "source.jsonl")
        entries, total = _source_lines(source), _count_lines(source)
    batches = max(1, -(-total // config.batch_size))
    log.info("splitting", {"items": total, "batch_size": config.batch_size, "batches": batches})
    number, start, items, unreadable = 1, 0, [], {}
    split_at = time.time()

    def due(number: int) -> float:
        return split_at + (number - 1) * config.delay_seconds if config.delay_seconds else 0.0

    for index, (item, error) in enumerate(entries):
        if error is not None:
            unreadable[index] = error
        items.append(item)
        if len(items) == config.batch_size:
            yield dg.DynamicOutput(
                Batch(number, batches, start, items, unreadable, due(number)), mapping_key=f"b{number:05d}"
            )
            number, start, items, unreadable = number + 1, index + 1, [], {}
    if items or number == 1:
        yield dg.DynamicOutput(
            Batch(number, batches, start, items, unreadable, due(number)), mapping_key=f"b{number:05d}"
        )
    if config.source is not None:
        source.unlink(missing_ok=True)  # every batch is with the IO manager now


@dg.op
def process_batch(context: dg.OpExecutionContext, batch: Batch, storage: Storage) -> dg.Output[BatchReport]:
    """Normalize each item; store the good ones as JSON Lines, report each bad one by index and reason."""
    if batch.not_before:
        wait.until(context, batch.not_before)  # first: the work below never runs before a wait
    log = StepLog(context)
    failures: list[dict[str, Any]] = []
    processed = 0
    key = f"batches/{context.run_id}/results/{batch.number:05d}.jsonl"
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "results.jsonl"
        with path.open("w", encoding="utf-8") as out:
            for offset, item in enumerate(batch.items):
                index = batch.start + offset
                try:
                    if index in batch.unreadable:
                        raise ValueError(batch.unreadable[index])
                    record = contacts.normalize(item)
                except ValueError as error:
                    failures.append({"index": index, "error": str(error)})
                    continue
                out.write(json.dumps({"index": index, **record}) + "\n")
                processed += 1
        stored = storage.put_file(key, path, "application/x-ndjson")
    fields = {"processed": processed, "failed": len(failures)}
    log.info(f"batch {batch.number}/{batch.of} done", fields)
    metadata.increment("processed", processed, context=context)
    metadata.increment("failed", len(failures), context=context)
    metadata.increment("batches_done", context=context)
    if failures:
        log.warning(f"batch {batch.number}/{batch.of}: bad items", {"first": failures[:5]})
    report = BatchReport(batch.number, processed, failures, key, stored.url)
    return dg.Output(report, metadata={**fields, "results": dg.MetadataValue.url(stored.url)})


@dg.op
def summarize(
    context: dg.OpExecutionContext, reports: list[BatchReport], storage: Storage
) -> dg.Output[dict[str, Any]]:
    """Add up the batches; write a manifest of every results file and every bad item; return the summary."""
    reports = sorted(reports, key=lambda report: report.number)
    failures = [failure for report in reports for failure in report.failures]
    manifest = {
        "run_id": context.run_id,
        "results": [{"key": r.results_key, "url": r.results_url, "processed": r.processed} for r in reports],
        "failures": failures,
    }
    key = f"batches/{context.run_id}/manifest.json"
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "manifest.json"
        path.write_text(json.dumps(manifest))
        stored = storage.put_file(key, path, "application/json")
    summary = {
        "total_processed": sum(report.processed for report in reports),
        "failed": len(failures),
        "failures": failures[:FAILURES_IN_RESULT],
        "batches": len(reports),
        "results": stored.url,
    }
    StepLog(context).info("batch summary", {k: v for k, v in summary.items() if k != "failures"})
    return job_result(summary)
