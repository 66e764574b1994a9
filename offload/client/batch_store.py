"""The batches' tables and their store (offload/client/batches.py says how a batch is written and created).

Apart from ``batches`` so that importing the client does not import SQLAlchemy.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from offload.client.batches import CREATED, FAILED, PENDING, STALE_CLAIM_SECONDS, ItemRow, NewItem, run_id_for
from offload.client.idempotency import MAX_KEY_LENGTH, default_url
from offload.client.idempotency_store import create_tables, make_engine

_metadata = sa.MetaData()
batches_table = sa.Table(
    "offload_batches",
    _metadata,
    sa.Column("batch_id", sa.String(32), primary_key=True),
    sa.Column("job", sa.String(200), nullable=False),
    sa.Column("batch_key", sa.String(MAX_KEY_LENGTH), nullable=True),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("job", "batch_key", name="offload_batches_key"),
)
items_table = sa.Table(
    "offload_batch_items",
    _metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("batch_id", sa.String(32), nullable=False),
    sa.Column("idx", sa.Integer, nullable=False),
    sa.Column("job", sa.String(200), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("config", sa.Text, nullable=False),  # JSON: the payload (run config)
    sa.Column("tags", sa.Text, nullable=False),  # JSON: the run's tags, checked by the client
    sa.Column("idempotency_key", sa.String(MAX_KEY_LENGTH), nullable=True),
    sa.Column("idempotency_ttl", sa.Float, nullable=True),
    sa.Column("state", sa.String(10), nullable=False),  # pending, created, failed
    sa.Column("error", sa.Text, nullable=True),  # JSON: {"kind": "payload" | "error", "lines": [...]}
    sa.Column("claim", sa.String(32), nullable=True),
    sa.Column("claimed_at", sa.Float, nullable=True),
    sa.UniqueConstraint("batch_id", "idx", name="offload_batch_items_index"),
    sa.Index("offload_batch_items_state", "state", "seq"),
)


def _row(batch_id: str, job: str, index: int, item: NewItem) -> dict[str, Any]:
    return {
        "batch_id": batch_id, "idx": index, "job": job, "run_id": run_id_for(batch_id, index),
        "config": json.dumps(dict(item.config or {})), "tags": json.dumps(dict(item.tags or {})),
        "idempotency_key": item.idempotency_key, "idempotency_ttl": item.idempotency_ttl,
        "state": FAILED if item.error is not None else PENDING,
        "error": json.dumps(item.error) if item.error is not None else None,
        "claim": None, "claimed_at": None,
    }  # fmt: skip


def _item(row: Any) -> ItemRow:
    return ItemRow(
        batch_id=row.batch_id, index=row.idx, job=row.job, run_id=row.run_id, state=row.state,
        config=json.loads(row.config), tags=json.loads(row.tags), idempotency_key=row.idempotency_key,
        idempotency_ttl=row.idempotency_ttl, error=json.loads(row.error) if row.error else None,
        claim=row.claim,
    )  # fmt: skip


class BatchStore:
    """The batches and their items. Thread-safe; one per process is enough."""

    def __init__(self, url: str | None = None):
        self.url = url or default_url()
        self.engine = make_engine(self.url)
        create_tables(self.engine, _metadata, items_table)

    def submit(self, job: str, items: Sequence[NewItem], batch_key: str | None) -> tuple[str, bool]:
        """Write the batch and its items in one transaction; ``(batch id, created)``. With a batch key
        already used for ``job``, nothing is written and the first batch's id comes back (created False)."""
        batch_id = uuid.uuid4().hex
        now = time.time()
        rows = [_row(batch_id, job, index, item) for index, item in enumerate(items)]
        try:
            with self.engine.begin() as tx:
                tx.execute(sa.insert(batches_table).values(
                    batch_id=batch_id, job=job, batch_key=batch_key, size=len(rows), created_at=now,
                ))  # fmt: skip
                if rows:
                    tx.execute(sa.insert(items_table), rows)
            return batch_id, True
        except sa.exc.IntegrityError:
            if batch_key is None:
                raise
        existing = self.find(job, batch_key)
        if existing is None:  # pragma: no cover - the key's row cannot vanish: batches are never deleted
            raise RuntimeError(f"batch_idempotency_key {batch_key!r}: conflicting batch not found")
        return existing, False

    def find(self, job: str, batch_key: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(batches_table.c.batch_id).where(
                    (batches_table.c.job == job) & (batches_table.c.batch_key == batch_key)
                )
            ).scalar()

    def items(self, batch_id: str) -> list[ItemRow]:
        """The batch's items in index order (empty: no such batch)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(items_table).where(items_table.c.batch_id == batch_id).order_by(items_table.c.idx)
            )
            return [_item(row) for row in rows]

    def job_of(self, batch_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(batches_table.c.job).where(batches_table.c.batch_id == batch_id)
            ).scalar()

    def pending(self, batch_id: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(
                        (items_table.c.batch_id == batch_id) & (items_table.c.state == PENDING)
                    )
                ).scalar()
                or 0
            )

    # -- the creator's side ----------------------------------------------------------------------------

    def claim(self, token: str, limit: int, stale_after: float = STALE_CLAIM_SECONDS) -> list[ItemRow]:
        """Claim up to ``limit`` pending items (unclaimed, or claimed longer than ``stale_after`` ago),
        oldest first; the items now held by ``token``."""
        now = time.time()
        free = (items_table.c.state == PENDING) & (
            items_table.c.claim.is_(None) | (items_table.c.claimed_at < now - stale_after)
        )
        with self.engine.begin() as tx:
            seqs = [
                row.seq
                for row in tx.execute(
                    sa.select(items_table.c.seq).where(free).order_by(items_table.c.seq).limit(limit)
                )
            ]
            if not seqs:
                return []
            tx.execute(
                sa.update(items_table)
                .where(items_table.c.seq.in_(seqs) & free)
                .values(claim=token, claimed_at=now)
            )
            rows = tx.execute(
                sa.select(items_table)
                .where(items_table.c.seq.in_(seqs) & (items_table.c.claim == token))
                .order_by(items_table.c.seq)
            )
            return [_item(row) for row in rows]

    def finish(self, item: ItemRow, run_id: str | None, error: Mapping[str, Any] | None = None) -> None:
        """Record the item's outcome: its run (``run_id``: the item's own, or an idempotency key's run)
        or its error."""
        state = CREATED if error is None else FAILED
        with self.engine.begin() as tx:
            tx.execute(
                sa.update(items_table)
                .where(
                    (items_table.c.batch_id == item.batch_id)
                    & (items_table.c.idx == item.index)
                    & (items_table.c.state == PENDING)
                )
                .values(
                    state=state,
                    run_id=run_id or item.run_id,
                    error=json.dumps(dict(error)) if error is not None else None,
                )
            )

    def close(self) -> None:
        self.engine.dispose()
