"""offload/runtime/ui_tag_pins.py: which keys go into the UI page's unpinning script, where the script goes
(after webpack's nonce setter, with the page's nonce), and the middleware on a stand-in app: HTML pages are
edited with a correct length, everything else passes untouched. tests/test_ui.py checks the runs list in a
browser."""

from __future__ import annotations

import json
import re
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from offload.runtime.ui_tag_pins import KNOWN_KEYS, TagKeys, UITagPins, internal_keys, with_unpin_script

ROOT = Path(__file__).resolve().parent.parent
NONCE = "0123456789abcdef0123456789abcdef"
SETTER = f'<script id="webpack-nonce-setter" nonce="{NONCE}">__webpack_nonce__ = \'{NONCE}\';</script>'
PAGE = (
    f'<html><head><script nonce="{NONCE}">window.x = 1</script>{SETTER}'
    f'<script src="/app.js" nonce="{NONCE}"></script></head></html>'
)


def test_every_offload_tag_the_code_sets_is_known() -> None:
    """A tag added to the code without a line in KNOWN_KEYS would show in the runs list until a run has it
    and the minute's cache has passed: the source is the list's test."""
    literals = set()
    for room in ("offload", "pipelines", "resources", "schedules", "sensors"):
        for path in (ROOT / room).rglob("*.py"):
            literals |= set(re.findall(r"[\"'](offload/[A-Za-z0-9_.:-]+)[\"']", path.read_text()))
    prefixes = {key for key in literals if key.endswith("-")}  # offload/limit-<N>: keys from the instance
    assert prefixes == {"offload/limit-", "offload/key-limit-"}
    assert sorted(literals - prefixes) == sorted(KNOWN_KEYS)


def test_only_offload_keys_of_a_safe_shape_are_unpinned() -> None:
    keys = ["video_id", "offload/retry", "dagster/run_key", "offload/limit-2", "offload/</script>"]
    assert internal_keys(keys) == sorted({*KNOWN_KEYS, "offload/limit-2"})


def test_the_script_follows_the_nonce_setter_with_the_pages_nonce() -> None:
    edited = with_unpin_script(PAGE, ["offload/kind", "offload/retry"])
    assert re.findall(r'nonce="([^"]+)"', edited) == [NONCE] * 4  # the page's three and ours
    setter = edited.index("webpack-nonce-setter")
    ours = edited.index('"offload/kind", "offload/retry"')
    assert setter < ours < edited.index("/app.js")
    assert json.dumps(["offload/kind", "offload/retry"]) in edited


def test_a_page_without_the_nonce_setter_is_unchanged() -> None:
    other = "<html><head><script>x</script></head></html>"
    assert with_unpin_script(other, ["offload/kind"]) == other


def test_keys_are_read_again_after_the_refresh() -> None:
    reads = [["offload/limit-3"], ["offload/limit-4"]]
    keys = TagKeys(lambda: reads.pop(0), refresh_seconds=3600)
    assert "offload/limit-3" in keys()
    assert "offload/limit-4" not in keys()  # not an hour old: kept
    assert "offload/limit-5" in TagKeys(lambda: ["offload/limit-5"], refresh_seconds=0)()


def test_the_middleware_edits_html_pages_only() -> None:
    app = Starlette(routes=[
        Route("/runs", lambda request: HTMLResponse(PAGE), methods=["GET", "POST"]),
        Route("/graphql", lambda request: JSONResponse({"page": PAGE})),
    ])  # fmt: skip
    client = TestClient(UITagPins(app, lambda: ["offload/kind"]))
    page = client.get("/runs")
    assert page.status_code == 200 and "offload.unpinned-defaults" in page.text
    assert int(page.headers["content-length"]) == len(page.content)
    data = client.get("/graphql")
    assert data.json() == {"page": PAGE}
    assert client.post("/runs").text == PAGE  # only GET pages are edited
