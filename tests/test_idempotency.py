"""The idempotency table on SQLite and Postgres: one claim per key under threads and processes, claims
released on failed launches, failed runs clearing their key, expiry, stale claims taken over."""

import multiprocessing
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from benchmarks.support.postgres import temporary_database
from benchmarks.support.waiting import wait_for
from offload.client import idempotency
from offload.client.idempotency import IdempotencyStore, keys_table


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'keys.sqlite3'}"
    else:
        with temporary_database() as url:
            yield url


def _claim_in_process(url: str, results: "multiprocessing.Queue[bool]") -> None:
    store = IdempotencyStore(url)
    claim = store.claim("job", "shared", 60)
    if claim.run_id is None:
        store.record("job", "shared", claim.token, "run-from-process")
    results.put(claim.run_id is None)
    store.close()


def test_one_claim_among_threads(store_url):
    store = IdempotencyStore(store_url)
    barrier = threading.Barrier(50)
    outcomes: list[str] = []

    def claim(n: int) -> None:
        barrier.wait()
        got = store.claim("job", "k", 60)
        if got.run_id is None:
            time.sleep(0.2)  # the launch: the others must wait for the id, not take the key
            store.record("job", "k", got.token, f"run-{n}")
            outcomes.append(f"run-{n}")
        else:
            outcomes.append(got.run_id)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 50 and len(set(outcomes)) == 1


def test_one_claim_among_processes(store_url):
    IdempotencyStore(store_url).close()  # the table exists before the race
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_claim_in_process, args=(store_url, results)) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    claimed = [results.get(timeout=5) for _ in workers]
    assert claimed.count(True) == 1


def test_release_and_clear_free_the_key(store_url):
    store = IdempotencyStore(store_url)
    first = store.claim("job", "k", 60)
    store.release("job", "k", first.token)
    second = store.claim("job", "k", 60)
    assert second.run_id is None and second.token != first.token
    store.record("job", "k", second.token, "run-1")
    store.clear("job", "k", "some-other-run")  # only the run the key points at clears it
    assert store.claim("job", "k", 60).run_id == "run-1"
    store.clear("job", "k", "run-1")
    assert store.claim("job", "k", 60).run_id is None


def test_keys_are_per_job_and_expire(store_url):
    store = IdempotencyStore(store_url)
    claim = store.claim("a", "k", 0.3)
    store.record("a", "k", claim.token, "run-a")
    assert store.claim("b", "k", 60).run_id is None
    wait_for(
        lambda: store.claim("a", "k", 0.3).run_id != "run-a", 10, "a new claim once the TTL has passed", 0.05
    )


def test_a_stale_claim_is_taken_over(store_url):
    store = IdempotencyStore(store_url)
    store.claim("job", "k", 60)  # the claimer dies before recording a run
    stale_since = time.time() - idempotency.STALE_CLAIM_SECONDS - 1
    with store.engine.begin() as tx:
        tx.execute(sa.update(keys_table).values(claimed_at=stale_since))
    taken = store.claim("job", "k", 60)
    assert taken.run_id is None and taken.took_over and taken.since == pytest.approx(stale_since)
    with pytest.raises(TimeoutError, match="still launching"):  # the new claim is fresh: others wait for it
        store.claim("job", "k", 60, wait=0.2)


@pytest.mark.parametrize(
    ("ttl", "seconds"),
    [(90, 90.0), (timedelta(hours=2), 7200.0), ("30s", 30.0), ("15m", 900.0), ("7d", 604800.0)],
)
def test_ttl_forms(ttl, seconds):
    assert idempotency.ttl_seconds(ttl) == seconds


@pytest.mark.parametrize("ttl", ["soon", "1y", 0, -5])
def test_bad_ttls_say_what_is_accepted(ttl):
    with pytest.raises(ValueError, match="idempotency_ttl"):
        idempotency.ttl_seconds(ttl)
