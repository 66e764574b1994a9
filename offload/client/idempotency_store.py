"""The idempotency table and its store (see offload/client/idempotency.py for the rules); loaded on first
use, with SQLAlchemy."""

from __future__ import annotations

import os
import time
import uuid

import sqlalchemy as sa

from offload.client.idempotency import MAX_KEY_LENGTH, STALE_CLAIM_SECONDS, Claim, default_url

_metadata = sa.MetaData()
keys_table = sa.Table(
    "offload_idempotency_keys",
    _metadata,
    sa.Column("job", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(MAX_KEY_LENGTH), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=True),  # NULL while the claimer launches the run
    sa.Column("claim", sa.String(32), nullable=False),  # who holds the row: compare-and-set token
    sa.Column("claimed_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)


def make_engine(url: str) -> sa.Engine:
    """An engine for the keys' database (the batch tables share it: offload/client/batches.py)."""
    if url.startswith("sqlite:///"):
        database = os.path.abspath(url.removeprefix("sqlite:///"))
        os.makedirs(os.path.dirname(database), exist_ok=True)
        # A writer waits for the lock instead of failing at once; WAL lets readers read meanwhile.
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _sqlite_wal)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def create_tables(engine: sa.Engine, metadata: sa.MetaData, probe: sa.Table) -> None:
    """``metadata``'s tables, unless they exist. Another process may create them between our check and our
    CREATE: that is fine if ``probe`` is there afterwards."""
    try:
        metadata.create_all(engine, checkfirst=True)
    except sa.exc.SQLAlchemyError:
        if not sa.inspect(engine).has_table(probe.name):
            raise


class IdempotencyStore:
    """The ``(job, key) -> run id`` table. Safe to share between threads; one per process is enough."""

    def __init__(self, url: str | None = None):
        self.url = url or default_url()
        self.engine = make_engine(self.url)
        create_tables(self.engine, _metadata, keys_table)

    def claim(
        self, job: str, key: str, ttl: float, *, wait: float = 60.0, stale_after: float = STALE_CLAIM_SECONDS
    ) -> Claim:
        """Insert our claim, or return the run the key already has. Waits while another caller launches;
        takes over a claim not made or renewed (:meth:`renew`) for ``stale_after`` seconds."""
        deadline = time.monotonic() + wait
        delay = 0.02
        while True:
            now = time.time()
            token = uuid.uuid4().hex
            row_filter = (keys_table.c.job == job) & (keys_table.c.key == key)
            try:
                with self.engine.begin() as tx:
                    tx.execute(sa.delete(keys_table).where(row_filter & (keys_table.c.expires_at <= now)))
                    tx.execute(sa.insert(keys_table).values(
                        job=job, key=key, run_id=None, claim=token, claimed_at=now, expires_at=now + ttl,
                    ))  # fmt: skip
                return Claim(token=token, run_id=None)
            except sa.exc.IntegrityError:
                pass
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(keys_table).where(row_filter)).first()
            if row is not None and row.run_id is not None:
                return Claim(token=row.claim, run_id=row.run_id)
            if row is not None and now - row.claimed_at > stale_after:
                with self.engine.begin() as tx:
                    taken = tx.execute(
                        sa.update(keys_table)
                        .where(row_filter & (keys_table.c.claim == row.claim) & keys_table.c.run_id.is_(None))
                        .values(claim=token, claimed_at=now, expires_at=now + ttl)
                    ).rowcount
                if taken == 1:
                    return Claim(token=token, run_id=None, took_over=True, since=row.claimed_at)
            if time.monotonic() > deadline:
                raise TimeoutError(f"idempotency_key {key!r}: another caller is still launching its run")
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def renew(self, job: str, key: str, token: str) -> bool:
        """Keep our claim fresh while the work it guards goes on; False if it is no longer ours."""
        with self.engine.begin() as tx:
            return (
                tx.execute(
                    sa.update(keys_table)
                    .where(
                        (keys_table.c.job == job) & (keys_table.c.key == key) & (keys_table.c.claim == token)
                    )
                    .values(claimed_at=time.time())
                ).rowcount
                == 1
            )

    def record(self, job: str, key: str, token: str, run_id: str) -> None:
        """The run our claim launched; callers waiting on the key return it from now on."""
        with self.engine.begin() as tx:
            tx.execute(
                sa.update(keys_table)
                .where((keys_table.c.job == job) & (keys_table.c.key == key) & (keys_table.c.claim == token))
                .values(run_id=run_id)
            )

    def release(self, job: str, key: str, token: str) -> None:
        """Give up our claim (the launch failed): the next caller claims afresh."""
        with self.engine.begin() as tx:
            tx.execute(
                sa.delete(keys_table).where(
                    (keys_table.c.job == job) & (keys_table.c.key == key) & (keys_table.c.claim == token)
                )
            )

    def delete_expired(self, job: str) -> None:
        """Remove ``job``'s rows whose TTL has passed (a claim only clears an expired row of its own key)."""
        with self.engine.begin() as tx:
            tx.execute(
                sa.delete(keys_table).where(
                    (keys_table.c.job == job) & (keys_table.c.expires_at <= time.time())
                )
            )

    def clear(self, job: str, key: str, run_id: str) -> None:
        """Forget the key if it still points at ``run_id`` (that run failed)."""
        with self.engine.begin() as tx:
            tx.execute(
                sa.delete(keys_table).where(
                    (keys_table.c.job == job) & (keys_table.c.key == key) & (keys_table.c.run_id == run_id)
                )
            )

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_wal(connection: object, _record: object) -> None:
    cursor = connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
