"""``client.subscribe``: a run's (or a tag's runs') snapshots as they change, like Trigger.dev's Realtime.

    for run in client.subscribe(handle.id):          # a Run on every change of status, metadata or output
        print(run.status, run.metadata.get("progress"))
    # ends after the final snapshot (output or error included)

    for run in client.subscribe(tag=("user_id", "u_42"), timeout=600):
        ...                                          # any of that user's runs; ends at the timeout

The client polls the Dagster webserver (one GraphQL request per interval per subscription); the browser's
equivalent is the gateway's Server-Sent Events stream (offload/webhooks/realtime.py), which polls once for
all its subscribers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from offload.client.runs import Run

if TYPE_CHECKING:
    from offload.client.api import Client

ROOT_RUN_TAG = "dagster/root_run_id"
TAG_RUNS_LIMIT = 100  # newest runs with the tag looked at per poll


def change_key(run: Run) -> tuple[str, str, str]:
    """What a subscriber is told about when it changes."""
    return run.status.value, json.dumps(run.metadata, sort_keys=True), json.dumps(run.output, default=str)


def tag_filter(tag: tuple[str, str] | Mapping[str, str]) -> list[dict[str, str]]:
    pairs = list(tag.items()) if isinstance(tag, Mapping) else [tag]
    if not pairs or not all(isinstance(k, str) and isinstance(v, str) for k, v in pairs):
        raise ValueError("tag: give ('key', 'value') or {'key': 'value'}")
    return [{"key": k, "value": v} for k, v in pairs]


def snapshot(client: Client, run_id: str) -> Run:
    """The run now, cheaply (no event log read) unless it is final (then with its output or error)."""
    run, attempts = client._records(run_id)
    built = client._build(run, attempts, with_events=False)
    return client.retrieve(run_id) if built.is_final else built


def tag_snapshots(client: Client, filter_: list[dict[str, str]], finals: dict[str, Run]) -> list[Run]:
    """The newest runs with the tag, each as one Run (attempts grouped under their first)."""
    records = client._runs_page({"tags": filter_}, None, TAG_RUNS_LIMIT)
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(record["rootRunId"] or record["runId"], []).append(record)
    found = []
    for root, group in groups.items():
        if root in finals:
            found.append(finals[root])
            continue
        first = next((r for r in group if r["runId"] == root), None)
        if first is None:
            continue  # only a retry of an older run is in this page: its first attempt is past the limit
        attempts = sorted(group, key=lambda r: r["creationTime"])
        built = client._build(first, attempts, with_events=False)
        if built.is_final:
            finals[root] = built = client.retrieve(root)
        found.append(built)
    return found


class Subscription:
    """One subscription's state: what was last told, and when to stop. ``poll`` returns the changes since
    the last poll (blocking I/O: the async client calls it in a thread)."""

    def __init__(
        self,
        client: Client,
        run_id: str | None,
        tag: tuple[str, str] | Mapping[str, str] | None,
        poll_interval: float,
        timeout: float | None,
    ):
        if (run_id is None) == (tag is None):
            raise ValueError("subscribe: give a run id or tag=, not both")
        self.client, self.run_id, self.poll_interval = client, run_id, poll_interval
        self.filter = tag_filter(tag) if tag is not None else []
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.done = False
        self._seen: dict[str, tuple[str, str, str]] = {}
        self._finals: dict[str, Run] = {}

    def poll(self) -> list[Run]:
        if self.run_id is not None:
            runs = [snapshot(self.client, self.run_id)]
            self.done = runs[0].is_final
        else:
            runs = tag_snapshots(self.client, self.filter, self._finals)
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.done = True
        changed = []
        for run in runs:
            key = change_key(run)
            if self._seen.get(run.id) != key:
                self._seen[run.id] = key
                changed.append(run)
        return changed

    def pause(self) -> float:
        """Seconds until the next poll."""
        if self.deadline is None:
            return self.poll_interval
        return max(0.0, min(self.poll_interval, self.deadline - time.monotonic()))


def subscribe(
    client: Client,
    run_id: str | None = None,
    *,
    tag: tuple[str, str] | Mapping[str, str] | None = None,
    poll_interval: float = 0.5,
    timeout: float | None = None,
) -> Iterator[Run]:
    subscription = Subscription(client, run_id, tag, poll_interval, timeout)
    while True:
        yield from subscription.poll()
        if subscription.done:
            return
        time.sleep(subscription.pause())
