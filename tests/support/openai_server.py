"""A fake OpenAI API on 127.0.0.1 (Starlette under uvicorn in a thread) for tests of the real ``openai`` SDK.

It answers ``POST /v1/chat/completions`` (plain and JSON mode) with what the test's ``chat`` function
returns for the request, and ``POST /v1/images/generations`` with a small PNG as ``b64_json`` or as a
``url`` it serves itself (``GET /files/<name>``), reporting token usage as OpenAI does. Errors are queued
per path in ``fail_next`` (status, headers, body), e.g. a 429 with ``Retry-After``. Every request is
recorded with its time, so tests can count calls per endpoint and measure the waits between them.

``openai_server()`` serves it with ``serving_asgi`` (a port the OS picks, ready within a deadline, stopped by
its handle).
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from benchmarks.support.threaded_server import Recorded, serving_asgi

CHAT = "/v1/chat/completions"
IMAGES = "/v1/images/generations"


@dataclass
class Failure:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


def png(width: int = 64, height: int = 40) -> bytes:
    """A real PNG image, as a provider would send."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (32, 120, 200)).save(out, format="PNG")
    return out.getvalue()


def words(text: str) -> int:
    return len(text.split())


def first_user_message(body: dict[str, Any]) -> str:
    """What the conversation asks for (a retry adds later user messages after it)."""
    return next((m["content"] for m in body["messages"] if m["role"] == "user"), "")


@dataclass
class FakeOpenAI:
    """State of the fake server: what it answers, and every request it received."""

    url: str = ""  # the API root, ``http://127.0.0.1:<port>/v1``: what ``base_url`` is set to
    origin: str = ""  # ``127.0.0.1:<port>``: what a downloader's allow list names
    chat: Callable[[dict[str, Any]], str] = lambda body: "Hello from the fake model."
    image_mode: str = "b64_json"  # or "url"
    image_link: str | None = None  # in "url" mode: the link sent instead of the server's own
    image: bytes = field(default_factory=png)
    fail_next: dict[str, list[Failure]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    reported_usage: list[dict[str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for r in self.requests if r.path == path)

    def of(self, path: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.fail_next.clear()
            self.reported_usage.clear()
        fresh = FakeOpenAI()
        self.chat, self.image_mode, self.image = fresh.chat, fresh.image_mode, fresh.image
        self.image_link = fresh.image_link

    def _failure(self, path: str) -> Failure | None:
        with self.lock:
            queued = self.fail_next.get(path)
            return queued.pop(0) if queued else None

    async def _record(self, request: Request) -> Recorded:
        raw = await request.body()
        recorded = Recorded(
            method=request.method,
            path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=json.loads(raw) if raw else None,
            at=time.monotonic(),
        )
        with self.lock:
            self.requests.append(recorded)
        return recorded

    def _usage(self, prompt: int, completion: int) -> dict[str, int]:
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        with self.lock:
            self.reported_usage.append(usage)
        return usage

    async def chat_completions(self, request: Request) -> Response:
        recorded = await self._record(request)
        failure = self._failure(CHAT)
        if failure is not None:
            return _error(failure)
        body = recorded.body
        content = self.chat(body)
        prompt = sum(words(m["content"]) for m in body["messages"])
        return JSONResponse(
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": f"{body['model']}-0001",  # as OpenAI does: the dated snapshot that answered
                "choices": [
                    {"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}
                ],
                "usage": self._usage(prompt, words(content)),
            }
        )  # fmt: skip

    async def images_generations(self, request: Request) -> Response:
        recorded = await self._record(request)
        failure = self._failure(IMAGES)
        if failure is not None:
            return _error(failure)
        if self.image_mode == "url":
            own = f"http://{self.origin}/files/hero.png?se=2099-01-01&sig=secret-signature"
            item = {"url": self.image_link or own}
        else:
            item = {"b64_json": base64.b64encode(self.image).decode()}
        item["revised_prompt"] = recorded.body["prompt"]
        usage = {"input_tokens": words(recorded.body["prompt"]), "output_tokens": 272}
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        with self.lock:
            self.reported_usage.append(usage)
        return JSONResponse({"created": int(time.time()), "data": [item], "usage": usage})

    async def files(self, request: Request) -> Response:
        await self._record(request)
        return Response(self.image, media_type="image/png")


def _error(failure: Failure) -> Response:
    body = failure.body or {"error": {"message": f"fake error {failure.status}", "type": "server_error"}}
    return JSONResponse(body, status_code=failure.status, headers=failure.headers)


@contextmanager
def openai_server(startup_timeout: float = 10.0) -> Iterator[FakeOpenAI]:
    """Serve a ``FakeOpenAI`` on 127.0.0.1 until the block ends."""
    fake = FakeOpenAI()
    app = Starlette(
        routes=[
            Route(CHAT, fake.chat_completions, methods=["POST"]),
            Route(IMAGES, fake.images_generations, methods=["POST"]),
            Route("/files/{name}", fake.files, methods=["GET"]),
        ]
    )
    with serving_asgi(app, "fake-openai", startup_timeout) as port:
        fake.origin = f"127.0.0.1:{port}"
        fake.url = f"http://{fake.origin}/v1"
        yield fake
