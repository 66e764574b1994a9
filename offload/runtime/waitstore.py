"""The durable state of waits and tokens: two tables next to the Dagster instance's own storage.

With Postgres storage they live in the instance's database; with the embedded SQLite storage, in
``offload_waits.db`` beside the instance's ``runs.db`` (``DAGSTER_HOME/history``). Either way a restart of
the daemon, the webserver or the machine loses nothing: the resumer (offload/runtime/waits.py) reads them.

``offload_waits``: one row per wait a step reached, keyed by the run family (the root run id), the step key
and the wait's index within the step (``family/step/index``), so the re-executed step finds the waits it
already passed. ``state`` moves ``suspending`` (the step recorded it and is ending its run) -> ``waiting``
(the run that will resume it exists, NOT_STARTED) -> ``resuming`` -> ``resumed`` (submitted), or to
``canceled``. Every move is a compare-and-set on ``state``, so a resume happens once.

``offload_tokens``: a token waits for ``complete`` (once: the first completion's data wins, later ones are
no-ops) or its ``expires_at``.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa

from offload import sql_engines

_metadata = sa.MetaData()
waits_table = sa.Table(
    "offload_waits",
    _metadata,
    sa.Column("id", sa.String(400), primary_key=True),  # family/step_key/index
    sa.Column("family", sa.String(64), nullable=False, index=True),
    sa.Column("run_id", sa.String(64), nullable=False),  # the attempt that suspended
    sa.Column("step_key", sa.String(300), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # sleep | token | runs
    sa.Column("due_at", sa.Float, nullable=True),  # sleep: when; token: its timeout
    sa.Column("token_id", sa.String(64), nullable=True),
    sa.Column("child_runs", sa.Text, nullable=True),  # runs: JSON list of run ids
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("successor_id", sa.String(64), nullable=True),  # the run that resumes it
    sa.Column("result", sa.Text, nullable=True),  # JSON handed to the step on re-entry
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("resumed_at", sa.Float, nullable=True),
)
tokens_table = sa.Table(
    "offload_tokens",
    _metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("secret", sa.String(64), nullable=False),  # part of the token's URL: whoever has it completes
    sa.Column("idempotency_key", sa.String(400), nullable=True, unique=True),
    sa.Column("state", sa.String(16), nullable=False),  # waiting | completed | timed_out
    sa.Column("data", sa.Text, nullable=True),
    sa.Column("tags", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("completed_at", sa.Float, nullable=True),
)

SUSPENDING, WAITING, RESUMING, RESUMED, CANCELED = "suspending", "waiting", "resuming", "resumed", "canceled"
TOKEN_WAITING, TOKEN_COMPLETED, TOKEN_TIMED_OUT = "waiting", "completed", "timed_out"


@dataclass(frozen=True)
class WaitRow:
    id: str
    family: str
    run_id: str
    step_key: str
    kind: str
    due_at: float | None
    token_id: str | None
    child_runs: list[str]
    state: str
    successor_id: str | None
    result: Any
    created_at: float


@dataclass(frozen=True)
class TokenRow:
    id: str
    secret: str
    state: str
    data: Any
    tags: dict[str, str]
    created_at: float
    expires_at: float
    completed_at: float | None


def _wait(row: Any) -> WaitRow:
    return WaitRow(
        row.id, row.family, row.run_id, row.step_key, row.kind, row.due_at, row.token_id,
        json.loads(row.child_runs) if row.child_runs else [], row.state, row.successor_id,
        json.loads(row.result) if row.result else None, row.created_at,
    )  # fmt: skip


def _token(row: Any) -> TokenRow:
    return TokenRow(
        row.id, row.secret, row.state, json.loads(row.data) if row.data else None,
        json.loads(row.tags) if row.tags else {}, row.created_at, row.expires_at, row.completed_at,
    )  # fmt: skip


def storage_url(instance: dg.DagsterInstance) -> str:
    """Where the instance's waits live: its Postgres database, or a SQLite file beside its ``runs.db``."""
    storage = instance.run_storage
    postgres = getattr(storage, "postgres_url", None)
    if postgres:
        return str(postgres)
    conn_string = getattr(storage, "_conn_string", None)
    if conn_string:
        database = sa.make_url(conn_string).database
        if database:
            return f"sqlite:///{Path(database).parent / 'offload_waits.db'}"
    return f"sqlite:///{Path(instance.root_directory) / 'history' / 'offload_waits.db'}"


_stores: dict[str, WaitStore] = {}
_stores_lock = threading.Lock()


def for_instance(instance: dg.DagsterInstance) -> WaitStore:
    """The (per process, shared) store of ``instance``'s waits and tokens."""
    url = storage_url(instance)
    with _stores_lock:
        if url not in _stores:
            _stores[url] = WaitStore(url)
        return _stores[url]


class WaitStore:
    def __init__(self, url: str):
        self.engine = sql_engines.create_engine(url, "waits storage")
        for attempt in range(3):  # two processes creating the tables at once on Postgres: one loses, retries
            try:
                _metadata.create_all(self.engine)
                break
            except sa.exc.DBAPIError:
                if attempt == 2:
                    raise
                time.sleep(0.2)

    # -- waits ------------------------------------------------------------------------------------------

    def get_wait(self, wait_id: str) -> WaitRow | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(waits_table).where(waits_table.c.id == wait_id)).first()
        return _wait(row) if row is not None else None

    def record_wait(
        self,
        wait_id: str,
        *,
        family: str,
        run_id: str,
        step_key: str,
        kind: str,
        due_at: float | None = None,
        token_id: str | None = None,
        child_runs: Sequence[str] | None = None,
    ) -> WaitRow:
        """Record that the step reached a wait and is suspending ``run_id``: a new row, or the existing
        unresolved one moved to this attempt (its due time kept)."""
        values = {
            "family": family, "run_id": run_id, "step_key": step_key, "kind": kind, "token_id": token_id,
            "child_runs": json.dumps(list(child_runs)) if child_runs is not None else None,
            "state": SUSPENDING, "successor_id": None,
        }  # fmt: skip
        with self.engine.begin() as connection:
            existing = connection.execute(sa.select(waits_table).where(waits_table.c.id == wait_id)).first()
            if existing is None:
                connection.execute(
                    waits_table.insert().values(id=wait_id, due_at=due_at, created_at=time.time(), **values)
                )
            else:
                connection.execute(waits_table.update().where(waits_table.c.id == wait_id).values(**values))
        row = self.get_wait(wait_id)
        assert row is not None
        return row

    def waits_in(self, *states: str, kind: str | None = None) -> list[WaitRow]:
        query = sa.select(waits_table).where(waits_table.c.state.in_(states))
        if kind is not None:
            query = query.where(waits_table.c.kind == kind)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [_wait(row) for row in rows]

    def due_waits(self, now: float) -> list[WaitRow]:
        """Sleeps that are due, and token waits whose timeout has passed."""
        query = sa.select(waits_table).where(
            waits_table.c.state == WAITING,
            waits_table.c.kind.in_(("sleep", "token")),
            waits_table.c.due_at <= now,
        )
        with self.engine.connect() as connection:
            return [_wait(row) for row in connection.execute(query).all()]

    def next_due(self) -> float | None:
        query = sa.select(sa.func.min(waits_table.c.due_at)).where(
            waits_table.c.state == WAITING, waits_table.c.kind.in_(("sleep", "token"))
        )
        with self.engine.connect() as connection:
            value = connection.execute(query).scalar()
        return float(value) if value is not None else None

    def move(self, wait_id: str, from_state: str, to_state: str, **values: Any) -> bool:
        """Compare-and-set the wait's state; True if this call moved it."""
        if "result" in values:
            values["result"] = json.dumps(values["result"], default=str)
        query = (
            waits_table.update()
            .where(waits_table.c.id == wait_id, waits_table.c.state == from_state)
            .values(state=to_state, **values)
        )
        with self.engine.begin() as connection:
            return connection.execute(query).rowcount == 1

    def counts(self) -> dict[str, int]:
        query = sa.select(waits_table.c.state, sa.func.count()).group_by(waits_table.c.state)
        with self.engine.connect() as connection:
            return {state: int(count) for state, count in connection.execute(query).all()}

    # -- tokens -----------------------------------------------------------------------------------------

    def create_token(
        self, timeout: float, tags: Mapping[str, str] | None = None, idempotency_key: str | None = None
    ) -> TokenRow:
        """A new waiting token, or the one created earlier with ``idempotency_key``."""
        if idempotency_key is not None:
            found = self._token_by_key(idempotency_key)
            if found is not None:
                return found
        now = time.time()
        token_id = f"tok_{secrets.token_hex(12)}"
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    tokens_table.insert().values(
                        id=token_id,
                        secret=secrets.token_urlsafe(24),
                        idempotency_key=idempotency_key,
                        state=TOKEN_WAITING,
                        data=None,
                        tags=json.dumps(dict(tags or {})),
                        created_at=now,
                        expires_at=now + timeout,
                        completed_at=None,
                    )
                )
        except sa.exc.IntegrityError:  # created concurrently with the same key
            found = self._token_by_key(idempotency_key or "")
            if found is None:
                raise
            return found
        token = self.get_token(token_id)
        assert token is not None
        return token

    def _token_by_key(self, key: str) -> TokenRow | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(tokens_table).where(tokens_table.c.idempotency_key == key)
            ).first()
        return _token(row) if row is not None else None

    def get_token(self, token_id: str) -> TokenRow | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(tokens_table).where(tokens_table.c.id == token_id)).first()
        return _token(row) if row is not None else None

    def complete_token(self, token_id: str, data: Any) -> bool:
        """Complete a waiting token with ``data``; True if this call completed it (False: it was completed
        or timed out before, which changes nothing)."""
        query = (
            tokens_table.update()
            .where(tokens_table.c.id == token_id, tokens_table.c.state == TOKEN_WAITING)
            .values(state=TOKEN_COMPLETED, data=json.dumps(data), completed_at=time.time())
        )
        with self.engine.begin() as connection:
            return connection.execute(query).rowcount == 1

    def expire_tokens(self, now: float) -> None:
        """Time out the waiting tokens past their expiry (a read first: most passes have none, and a
        write on SQLite takes the database's lock)."""
        expired = (tokens_table.c.state == TOKEN_WAITING) & (tokens_table.c.expires_at <= now)
        with self.engine.connect() as connection:
            if connection.execute(sa.select(tokens_table.c.id).where(expired).limit(1)).first() is None:
                return
        query = tokens_table.update().where(expired).values(state=TOKEN_TIMED_OUT, completed_at=now)
        with self.engine.begin() as connection:
            connection.execute(query)

    def resolved_token_waits(self) -> list[tuple[WaitRow, TokenRow]]:
        """Token waits whose token is no longer waiting (completed or timed out)."""
        query = (
            sa.select(waits_table, tokens_table.c.state.label("token_state"))
            .join(tokens_table, tokens_table.c.id == waits_table.c.token_id)
            .where(waits_table.c.state == WAITING, tokens_table.c.state != TOKEN_WAITING)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        found = []
        for row in rows:
            token = self.get_token(row.token_id)
            if token is not None:
                found.append((_wait(row), token))
        return found
