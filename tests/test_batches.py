"""``Client.batch_trigger`` against a real ``offload dev`` (webserver with the batch creator, daemon, code
server), once on SQLite and once on Postgres (a database made for the run and dropped after).

A call whose answer is lost after the batch was written (the forced timeout), retried with the same batch
key, gets the same batch and creates every run once; so do two such retries racing; per-item idempotency
keys give back their runs; a batch returned at once (``wait=False``) lists its runs' ids before they exist
and ``batch(id)`` finds them created.
"""

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.support import dagster_deployment, postgres
from offload.client import BatchItem, Client
from offload.client.batch_store import BatchStore
from offload.client.batches import BATCH_TAG

RUN_TIMEOUT = 180.0


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def deployment(request, tmp_path_factory) -> Iterator[tuple[Client, str]]:
    root = tmp_path_factory.mktemp(f"batches-{request.param}")
    if request.param == "sqlite":
        keys_db = f"sqlite:///{root / 'idempotency.sqlite3'}"
        yield from _deploy(root, dagster_deployment.instance_yaml(), keys_db)
    else:
        with postgres.temporary_database() as url:
            instance = dagster_deployment.instance_yaml(dagster_deployment.postgres_storage(url))
            yield from _deploy(root, instance, url)


def _deploy(root: Path, instance: str, keys_db: str) -> Iterator[tuple[Client, str]]:
    services = dagster_deployment.start(
        root, instance=instance, env={"OFFLOAD_IDEMPOTENCY_DB": keys_db}, cli="offload", deadline=300
    )
    client = Client(services.url, idempotency_db=keys_db)
    try:
        yield client, keys_db
    finally:
        client.close()
        services.stop()


def _wait_created(client: Client, batch_id: str) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT
    while client.batch(batch_id).pending:
        assert time.monotonic() < deadline, f"batch {batch_id} still has pending items"
        time.sleep(0.5)


def _runs_tagged(client: Client, key: str, value: str) -> list[str]:
    records = client._runs_page({"tags": [{"key": key, "value": value}]}, None, 1000)
    return [record["runId"] for record in records]


class LostAnswer(TimeoutError):
    """What a caller sees when its request timed out after the server had done the work."""


def test_a_retry_after_a_lost_answer_creates_each_run_once(deployment, monkeypatch):
    client, keys_db = deployment
    marker = uuid.uuid4().hex[:12]
    payloads = [{"name": f"Item {index}"} for index in range(12)]
    key = f"import-{marker}"
    submit = BatchStore.submit

    def submit_then_time_out(self, *args, **kwargs):
        submit(self, *args, **kwargs)  # the batch is written ...
        raise LostAnswer("timed out")  # ... but the caller never hears of it

    monkeypatch.setattr(BatchStore, "submit", submit_then_time_out)
    with pytest.raises(LostAnswer):
        client.batch_trigger("hello_world", payloads, batch_idempotency_key=key, tags={"import": marker})
    monkeypatch.undo()

    # The retry, and two more racing it from fresh clients (other processes after a restart).
    results = []

    def retry() -> None:
        with_fresh = Client(client.url, idempotency_db=keys_db)
        try:
            results.append(with_fresh.batch_trigger("hello_world", payloads, batch_idempotency_key=key))
        finally:
            with_fresh.close()

    threads = [threading.Thread(target=retry) for _ in range(2)]
    for thread in threads:
        thread.start()
    retried = client.batch_trigger("hello_world", payloads, batch_idempotency_key=key)
    for thread in threads:
        thread.join(timeout=RUN_TIMEOUT)
    assert len(results) == 2
    assert {result.id for result in results} == {retried.id}
    _wait_created(client, retried.id)
    batch = client.batch(retried.id)
    assert not batch.errors and len(batch.runs) == len(payloads)
    created = _runs_tagged(client, "import", marker)
    assert sorted(created) == sorted(handle.id for handle in batch.runs)  # each item's run, once
    assert sorted(_runs_tagged(client, BATCH_TAG, retried.id)) == sorted(created)
    outputs = {client.wait(handle.id, timeout=RUN_TIMEOUT).output["message"] for handle in batch.runs[:2]}
    assert outputs == {"Hello, Item 0!", "Hello, Item 1!"}


def test_items_with_their_own_options_and_errors_by_index(deployment):
    client, _ = deployment
    marker = uuid.uuid4().hex[:12]
    first = client.trigger("hello_world", {"name": "Keyed"}, idempotency_key=f"k-{marker}")
    items = [
        BatchItem({"name": "Keyed again"}, idempotency_key=f"k-{marker}"),  # the key's run comes back
        {"name": "   "},  # the job's payload rule, applied by the code server
        BatchItem({"name": "Tagged"}, tags={"colour": "blue"}, max_attempts=2),
        {"nam": "typo"},  # the job's config schema
        {"name": "x", "token": "t"},  # refused by the client: a secret in the run config
    ]
    result = client.batch_trigger("hello_world", items, tags={"import": marker})
    assert not result.pending and result.id
    assert sorted(result.errors) == [1, 3, 4]
    assert result.errors[1].lines == ["name = '   ': must be 1-100 characters, not only spaces"]
    assert any('unexpected config entry "nam"' in line for line in result.errors[3].lines)
    assert "looks like a secret" in result.errors[4].lines[0]
    keyed, tagged = result.items[0], result.items[2]
    assert keyed.id == first.id and keyed.existing
    run = client.retrieve(tagged.id)
    assert run.tags["colour"] == "blue" and run.tags["import"] == marker
    assert run.tags["dagster/max_retries"] == "1"
    assert _runs_tagged(client, "import", marker) == [tagged.id]


def test_a_batch_returned_at_once_is_created_afterwards(deployment):
    client, _ = deployment
    marker = uuid.uuid4().hex[:12]
    result = client.batch_trigger("hello_world", [{"name": f"N{i}"} for i in range(30)], wait=False,
                                  tags={"import": marker})  # fmt: skip
    assert result.id and len(result.runs) == 30
    _wait_created(client, result.id)
    assert sorted(_runs_tagged(client, "import", marker)) == sorted(handle.id for handle in result.runs)
