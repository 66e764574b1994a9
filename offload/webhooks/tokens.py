"""Token URLs on the gateway: ``POST /tokens/{id}/{secret}`` completes a wait token (offload/wait.py).

The secret in the URL is the authorisation, so an email link or a partner's callback can complete the
token with nothing else. The body is the completion data: JSON (any value), a form (its fields), or empty
(``None``). A token already completed answers 200 all the same and keeps its first data; one that timed
out answers 409. An unknown id or a wrong secret answer 404 alike.

``GET`` on the URL (what clicking a link in an email does) completes nothing: mail scanners open links. It
answers a one-button page that POSTs the link's query fields (``?decision=approve``) as the form; a field
left empty in the link (``&reason=``) becomes a text box.
"""

from __future__ import annotations

import hmac
import json
from html import escape
from typing import Any
from urllib.parse import parse_qsl

import dagster as dg
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from offload.runtime import waitstore

MAX_BODY_BYTES = 64 * 1024


class TokenEndpoint:
    """Completes tokens in the instance's wait storage (the instance is opened on first use)."""

    def __init__(self, instance: dg.DagsterInstance | None = None):
        self._instance = instance

    def store(self) -> waitstore.WaitStore:
        if self._instance is None:
            self._instance = dg.DagsterInstance.get()
        return waitstore.for_instance(self._instance)

    async def handle(self, request: Request) -> Response:
        token_id, secret = request.path_params["token_id"], request.path_params["secret"]
        token = await run_in_threadpool(self.store().get_token, token_id)
        if token is None or not hmac.compare_digest(token.secret.encode(), secret.encode()):
            return JSONResponse({"error": "token: not found"}, status_code=404)
        if request.method == "GET":
            return _confirmation_page(dict(request.query_params))
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"error": f"body: larger than {MAX_BODY_BYTES} bytes"}, status_code=413)
        try:
            data = _data(request.headers.get("content-type", ""), body)
        except ValueError as error:
            return JSONResponse({"error": f"body: {error}"}, status_code=400)
        completed = await run_in_threadpool(self.store().complete_token, token_id, data)
        if not completed:
            token = await run_in_threadpool(self.store().get_token, token_id)
            if token is not None and token.state == waitstore.TOKEN_TIMED_OUT:
                return JSONResponse({"error": "token: timed out before it was completed"}, status_code=409)
        return JSONResponse({"ok": True, "id": token_id, "completed_now": completed})


def _data(content_type: str, body: bytes) -> Any:
    if not body.strip():
        return None
    if content_type.startswith("application/x-www-form-urlencoded"):
        return dict(parse_qsl(body.decode()))
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("must be JSON or a form") from None


def _confirmation_page(fields: dict[str, str]) -> HTMLResponse:
    # A field the link leaves empty (``?reason=``) is asked for; the others are sent as they are.
    inputs = "".join(
        f'<label>{escape(key)} <input name="{escape(key)}"></label>'
        if not value
        else f'<input type="hidden" name="{escape(key)}" value="{escape(value)}">'
        for key, value in fields.items()
    )
    summary = ", ".join(f"{escape(k)}: {escape(v)}" for k, v in fields.items() if v) or "confirm"
    page = (
        "<!doctype html><meta charset=utf-8><title>Confirm</title>"
        f"<form method=post><p>{summary}</p>{inputs}<button type=submit>Confirm</button></form>"
    )
    return HTMLResponse(page)
