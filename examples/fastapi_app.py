"""The seed's web app: hand a video to offload and answer at once; watch it live in the browser.

    .venv/bin/offload dev                                  # Dagster: webserver, daemon, code location
    .venv/bin/python -m offload.webhooks serve --port 3001  # the gateway: realtime for browsers
    .venv/bin/uvicorn examples.fastapi_app:app --port 8000  # this app; open http://127.0.0.1:8000/

Settings: ``OFFLOAD_DAGSTER_URL`` (the private webserver), ``OFFLOAD_REALTIME_SECRET`` (the same on this
app and the gateway; it signs the browser's tokens), ``OFFLOAD_GATEWAY_PUBLIC_URL`` (where browsers reach
the gateway, default http://127.0.0.1:3001).

    curl -X POST localhost:8000/api/upload -H 'content-type: application/json' -H 'Idempotency-Key: up-1' \
         -d '{"video_id": "intro-42", "video_url": "https://cdn.example.com/u/intro.mp4",
              "user_id": "user_7", "user_email": "ada@example.com"}'
    curl localhost:8000/api/status/<task_id>

``POST /api/upload`` answers with the task id and a public access token that reads only that run for 15
minutes: the page at ``/`` opens the gateway's Server-Sent Events stream with it and draws the progress the
job publishes (``offload.metadata``) until the links of the result arrive. A client retrying ``POST
/api/upload`` with the same ``Idempotency-Key`` header gets the same task back. The app uses
``AsyncClient``: no request blocks the event loop, and it needs only the thin client (no Dagster).
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from offload.client import AsyncClient, Client
from offload.exceptions import (
    ConfigurationError,
    InvalidPayloadError,
    RunNotFoundError,
    UnknownJobError,
    WebserverUnreachableError,
)

JOB = "video_pipeline"


class Upload(BaseModel):
    """The video to process; the job checks every field's rules (offload's payload validation)."""

    video_id: str
    video_url: str
    user_id: str
    user_email: str
    formats: list[str] | None = None


class Accepted(BaseModel):
    message: str
    task_id: str
    realtime_url: str | None = None  # the gateway's stream of this run, token included (None: poll status)


class TaskStatus(BaseModel):
    id: str
    status: str
    output: Any = None
    metadata: dict[str, Any] = {}
    created_at: datetime
    completed_at: datetime | None = None


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Upload a video</title>
<style>body{font-family:sans-serif;max-width:40em;margin:2em auto}label{display:block;margin:.4em 0}
#bar{width:100%;height:1.2em}</style></head>
<body><h1>Upload a video</h1>
<form id="upload">
<label>Video URL <input name="video_url" required size="50"></label>
<label>Video id <input name="video_id" required></label>
<label>User id <input name="user_id" required></label>
<label>Email <input name="user_email" type="email" required></label>
<button type="submit">Process</button></form>
<p id="state"></p><progress id="bar" max="100" value="0"></progress><ul id="links"></ul>
<script>
const $ = (id) => document.getElementById(id);
function show(run) {
  const m = run.metadata || {};
  const step = m.step ? " - " + m.step : "", percent = m.progress != null ? " " + m.progress + "%" : "";
  $("state").textContent = run.status + step + percent;
  if (m.progress != null) $("bar").value = m.progress;
  if (run.status === "COMPLETED" && run.output) {
    $("bar").value = 100;
    for (const [kind, url] of Object.entries(run.output.outputs || {})) {
      const a = Object.assign(document.createElement("a"), {href: url, textContent: kind});
      const li = document.createElement("li"); li.append(a); $("links").append(li);
    }
  } else if (run.error) { $("state").textContent = run.status + ": " + run.error; }
}
$("upload").onsubmit = async (event) => {
  event.preventDefault();
  const body = Object.fromEntries(new FormData(event.target));
  const answer = await fetch("/api/upload", {method: "POST", headers: {"content-type": "application/json"},
                                            body: JSON.stringify(body)});
  const task = await answer.json();
  if (!answer.ok) { $("state").textContent = JSON.stringify(task.detail); return; }
  $("state").textContent = "QUEUED";
  if (task.realtime_url) {
    const events = new EventSource(task.realtime_url);
    events.addEventListener("run", (e) => show(JSON.parse(e.data)));
    events.addEventListener("end", () => events.close());
  } else {
    const final = ["COMPLETED", "FAILED", "CANCELED", "CRASHED", "TIMED_OUT"];
    const poll = async () => { const run = await (await fetch("/api/status/" + task.task_id)).json();
      show(run); if (!final.includes(run.status)) setTimeout(poll, 1000); };
    poll();
  }
};
</script></body></html>
"""


def create_app(client: AsyncClient | Client | None = None, gateway_url: str | None = None) -> FastAPI:
    """The app, with its offload client (one per process)."""
    if isinstance(client, Client):
        client = AsyncClient.from_client(client)
    offload = client or AsyncClient()
    gateway = (gateway_url or os.environ.get("OFFLOAD_GATEWAY_PUBLIC_URL") or "http://127.0.0.1:3001").rstrip(
        "/"
    )
    app = FastAPI(title="offload example")

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    @app.post("/api/upload", status_code=202)
    async def upload(body: Upload, idempotency_key: Annotated[str | None, Header()] = None) -> Accepted:
        payload = body.model_dump(exclude_none=True)
        try:
            handle = await offload.trigger(JOB, payload, idempotency_key=idempotency_key)
        except InvalidPayloadError as error:
            raise HTTPException(422, {"message": "invalid payload", "errors": error.lines}) from None
        except WebserverUnreachableError:
            raise HTTPException(503, "the job runner is unavailable; try again shortly") from None
        except UnknownJobError:
            raise HTTPException(500, f"{JOB} is not deployed") from None
        try:
            token = offload.create_public_token(runs=[handle.id], expires="15m")
            realtime = f"{gateway}/realtime/runs/{handle.id}?token={token}"
        except ConfigurationError:  # OFFLOAD_REALTIME_SECRET not set: the page polls /api/status
            realtime = None
        return Accepted(message="Processing started", task_id=handle.id, realtime_url=realtime)

    @app.get("/api/status/{task_id}")
    async def status(task_id: str) -> TaskStatus:
        try:
            run = await offload.retrieve(task_id)
        except RunNotFoundError:
            raise HTTPException(404, "no such task") from None
        except WebserverUnreachableError:
            raise HTTPException(503, "the job runner is unavailable; try again shortly") from None
        return TaskStatus(
            id=run.id,
            status=run.status.value,
            output=run.output,
            metadata=run.metadata,
            created_at=run.created_at,
            completed_at=run.completed_at,
        )

    return app


app = create_app()
