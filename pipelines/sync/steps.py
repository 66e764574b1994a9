"""``extract`` -> ``transform`` -> ``load``, each logging what it did and failing with the reason in a line.

``extract`` reads up to ``max_rows`` rows after the destination's watermark; ``transform`` checks them (a key
and a cursor on every row, each key once) and keeps the columns the destination has; ``load`` upserts them
and moves the watermark in one transaction (``resources/sync_table.py``). A failure anywhere leaves the
watermark where it was, so the next run reads the same rows again. Database errors that another attempt may
clear (a dropped connection, a lock timeout) are retried; errors in the data or the schema fail the run at
once.
"""

from dataclasses import dataclass
from typing import Any

import dagster as dg
import sqlalchemy as sa

from offload.errors import AbortTaskRunError, ConfigurationError
from offload.log import StepLog, redact
from offload.result import job_result
from offload.retry import retrying
from pipelines.sync.payload import SyncPayload
from resources.sync_table import SqlTable, Watermark, WatermarkMoved

# Errors in the rows or the tables themselves: the same rows fail the same way next time.
PERMANENT = (
    sa.exc.IntegrityError,
    sa.exc.DataError,
    sa.exc.ProgrammingError,
    sa.exc.NoSuchTableError,
    LookupError,
    ConfigurationError,
)


@dataclass(frozen=True)
class Batch:
    """Rows read after ``after``; ``last`` is the watermark they end at (None when there are none)."""

    rows: list[dict[str, Any]]
    key: str
    cursor_column: str
    after: Watermark | None
    last: Watermark | None
    more: bool

    def summary(self) -> dict[str, Any]:
        return {
            "rows": len(self.rows),
            "after": self.after.describe() if self.after else None,
            "until": self.last.describe() if self.last else None,
            "more_waiting": self.more,
        }


def _fail(log: StepLog, step: str, error: Exception, fields: dict[str, Any]) -> AbortTaskRunError:
    """The error path: log the failure with its context, and fail the step for good. Only the error's first
    line is kept: a database error goes on with the statement and the row's values."""
    text = str(error).strip()
    message = redact(f"{step}: {type(error).__name__}: {text.splitlines()[0] if text else 'no message'}")
    log.error(f"{step} failed", {**fields, "error": message})
    return AbortTaskRunError(message)


@dg.op
@retrying()
def extract(
    context: dg.OpExecutionContext, config: SyncPayload, sync_source: SqlTable, sync_destination: SqlTable
) -> Batch:
    """Rows of the source after the destination's watermark, oldest first."""
    log = StepLog(context)
    fields = {
        "source": sync_source.table,
        "destination": sync_destination.table,
        "scheduled_for": config.timestamp,
    }
    try:
        after = sync_destination.watermark()
        rows, more = sync_source.changes_after(config.cursor_column, config.key, after, config.max_rows)
    except PERMANENT as error:
        raise _fail(log, "extract", error, fields) from None
    last = Watermark(rows[-1][config.cursor_column], rows[-1][config.key]) if rows else None
    batch = Batch(rows, config.key, config.cursor_column, after, last, more)
    log.info("extracted", {**fields, **batch.summary()})
    context.add_output_metadata({"rows": len(rows), "more_waiting": more})
    return batch


@dg.op
def transform(context: dg.OpExecutionContext, batch: Batch, sync_destination: SqlTable) -> Batch:
    """Check every row has a key and a cursor and each key comes once; keep the destination's columns."""
    log = StepLog(context)
    seen: set[Any] = set()
    for index, row in enumerate(batch.rows):
        key = row.get(batch.key)
        if key is None or row.get(batch.cursor_column) is None:
            problem = (
                f"row {index} has no {batch.key!r}"
                if key is None
                else f"row {batch.key}={key!r} has no cursor"
            )
            raise _fail(log, "transform", ValueError(problem), batch.summary())
        if key in seen:
            problem = f"{batch.key}={key!r} appears twice: the key must be unique in the source"
            raise _fail(log, "transform", ValueError(problem), batch.summary())
        seen.add(key)
    existing = sync_destination.reflect()
    rows = batch.rows
    if existing is not None and rows:
        dropped = sorted(set(rows[0]) - set(existing.c.keys()))
        if dropped:
            log.warning("columns the destination does not have are left out", {"columns": dropped})
            rows = [{k: v for k, v in row.items() if k in existing.c} for row in rows]
    log.info("transformed", {"rows": len(rows), "keys": len(seen)})
    return Batch(rows, batch.key, batch.cursor_column, batch.after, batch.last, batch.more)


@dg.op
@retrying()
def load(
    context: dg.OpExecutionContext, batch: Batch, sync_source: SqlTable, sync_destination: SqlTable
) -> dg.Output[dict[str, Any]]:
    """Upsert the rows and move the watermark, together; the result says what changed."""
    log = StepLog(context)
    fields = {"destination": sync_destination.table, **batch.summary()}
    if batch.last is None:
        log.info("nothing new to load", fields)
        result = {
            "rows": 0,
            "watermark": batch.after.describe() if batch.after else None,
            "more_waiting": False,
        }
        return job_result(result, metadata={"rows": 0})
    try:
        like = sync_source.reflect()
        if like is None:
            raise LookupError(f"source table {sync_source.name!r} does not exist")
        loaded = sync_destination.load(batch.rows, batch.key, like, batch.after, batch.last)
    except (WatermarkMoved, *PERMANENT) as error:
        raise _fail(log, "load", error, fields) from None
    result = {"rows": loaded, "watermark": batch.last.describe(), "more_waiting": batch.more}
    log.info("loaded", {**fields, "rows_upserted": loaded})
    return job_result(
        result,
        metadata={
            "rows": loaded,
            "watermark": dg.MetadataValue.json(batch.last.describe()),
            "more_waiting": batch.more,
        },
    )
