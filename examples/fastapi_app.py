"""The seed's web app: hand a video to offload and answer at once; poll for its status and output.

    .venv/bin/offload dev                                  # Dagster: webserver, daemon, code location
    .venv/bin/uvicorn examples.fastapi_app:app --port 8000  # this app (OFFLOAD_DAGSTER_URL to reach Dagster)

    curl -X POST localhost:8000/api/upload -H 'content-type: application/json' -H 'Idempotency-Key: up-1' \
         -d '{"video_id": "intro-42", "video_url": "https://cdn.example.com/u/intro.mp4",
              "user_id": "user_7", "user_email": "ada@example.com"}'
    curl localhost:8000/api/status/<task_id>

A client retrying ``POST /api/upload`` with the same ``Idempotency-Key`` header gets the same task back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel

from offload.client import Client
from offload.errors import InvalidPayloadError, RunNotFoundError, UnknownJobError, WebserverUnreachableError

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


class TaskStatus(BaseModel):
    id: str
    status: str
    output: Any = None
    created_at: datetime
    completed_at: datetime | None = None


def create_app(client: Client | None = None) -> FastAPI:
    """The app, with its offload client (one per process; thread-safe)."""
    offload = client or Client()
    app = FastAPI(title="offload example")

    @app.post("/api/upload", status_code=202)
    def upload(body: Upload, idempotency_key: Annotated[str | None, Header()] = None) -> Accepted:
        payload = body.model_dump(exclude_none=True)
        try:
            handle = offload.trigger(JOB, payload, idempotency_key=idempotency_key)
        except InvalidPayloadError as error:
            raise HTTPException(422, {"message": "invalid payload", "errors": error.lines}) from None
        except WebserverUnreachableError:
            raise HTTPException(503, "the job runner is unavailable; try again shortly") from None
        except UnknownJobError:
            raise HTTPException(500, f"{JOB} is not deployed") from None
        return Accepted(message="Processing started", task_id=handle.id)

    @app.get("/api/status/{task_id}")
    def status(task_id: str) -> TaskStatus:
        try:
            run = offload.retrieve(task_id)
        except RunNotFoundError:
            raise HTTPException(404, "no such task") from None
        except WebserverUnreachableError:
            raise HTTPException(503, "the job runner is unavailable; try again shortly") from None
        return TaskStatus(
            id=run.id,
            status=run.status.value,
            output=run.output,
            created_at=run.created_at,
            completed_at=run.completed_at,
        )

    return app


app = create_app()
