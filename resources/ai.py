"""Text and image generation through the official ``openai`` SDK, against OpenAI or any server that speaks
its API (a local model server, a gateway): ``base_url`` chooses which.

Retries are the SDK's own (``max_retries``): it retries connection errors, timeouts, 408, 409, 429 and 5xx
with exponential backoff, and waits what a ``Retry-After`` (or ``retry-after-ms``) header asks, up to two
minutes. Steps that call this resource carry no retry policy of their own for these calls: one layer of
retries with the provider's own pacing, not two layers multiplied together.

Every call is recorded where the run shows it: one log line with the model, token counts and duration,
and the calling step's output metadata (calls, tokens, images, model), summed over the step's calls.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import dagster as dg
from pydantic import BaseModel, Field, PrivateAttr, ValidationError

from offload.errors import ConfigurationError, configuration_checked, upstream_error_kind
from offload.log import StepLog, redact

if TYPE_CHECKING:  # imported when the first client is made: the SDK takes seconds to import
    import openai

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Local model servers ignore the key, but the SDK refuses to start without one.
KEY_NOT_NEEDED = "not-needed"
MISSING = (
    "OPENAI_API_KEY is not set: set it to your OpenAI API key, "
    "or set OPENAI_BASE_URL to an OpenAI-compatible server that needs no key"
)

M = TypeVar("M", bound=BaseModel)
Message = dict[str, str]
Context = dg.OpExecutionContext


@dataclass(frozen=True)
class TokenUsage:
    """What one or more calls consumed; ``+`` adds them up across calls and steps."""

    input_tokens: int = 0
    output_tokens: int = 0
    images: int = 0
    calls: int = 0
    model: str = ""

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        models = [m for m in dict.fromkeys([*self.model.split(","), *other.model.split(",")]) if m]
        return TokenUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            images=self.images + other.images,
            calls=self.calls + other.calls,
            model=",".join(models),
        )


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    usage: TokenUsage


@dataclass(frozen=True)
class GeneratedImage:
    """One image as the provider returned it: the bytes (``b64_json``) or a link that soon expires."""

    data: bytes | None
    url: str | None
    revised_prompt: str | None
    usage: TokenUsage


class AIError(RuntimeError):
    """A call failed after the SDK's retries; one line without secrets. ``retryable`` says whether a later
    attempt could succeed (rate limits, server errors, timeouts) or not (a bad request, a wrong key)."""

    def __init__(self, message: str, *, retryable: bool):
        self.retryable = retryable
        super().__init__(message)


class OpenAIResource(dg.ConfigurableResource):
    """Chat completions (plain and JSON mode) and image generation with the official SDK.

    Either ``api_key`` or ``base_url`` must be set; without both, setting the resource up raises a
    ``ConfigurationError`` naming the variable, so a run that needs it fails before its first step. Calls
    take the step's context: they log there and add their usage to the step's ``result`` output metadata.
    """

    api_key: str | None = Field(default=None, description="API key (bind with dg.EnvVar('OPENAI_API_KEY')).")
    base_url: str | None = Field(default=None, description=f"OpenAI-compatible API root; {DEFAULT_BASE_URL}.")
    chat_model: str = Field(default="gpt-4o-mini", description="Model for text (chat completions).")
    image_model: str = Field(default="gpt-image-1", description="Model for images.")
    image_size: str = Field(default="1024x1024", description="Size of generated images, e.g. 1536x1024.")
    image_response_format: str | None = Field(
        default=None,
        description="'b64_json' or 'url' for models that take it (DALL-E); gpt-image models always send b64.",
    )
    timeout_seconds: float = Field(default=120.0, description="Read timeout of one request.")
    connect_timeout_seconds: float = Field(default=10.0, description="Connect timeout of one request.")
    max_retries: int = Field(default=3, description="SDK retries of 408/409/429/5xx and connection errors.")

    _client: Any = PrivateAttr(default=None)  # openai.OpenAI, made by client()

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        with configuration_checked(context):
            self.client()

    def check(self) -> None:
        """Raise ``ConfigurationError`` (one line naming the variable) unless the settings can work."""
        if not self.api_key and not self.base_url:
            raise ConfigurationError(MISSING)
        if self.base_url:
            parts = urlsplit(self.base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigurationError(
                    "OPENAI_BASE_URL: must be an http(s) URL such as http://127.0.0.1:11434/v1, "
                    f"got {redact(self.base_url)!r}"
                )
        for name in ("chat_model", "image_model"):
            if not getattr(self, name).strip():
                raise ConfigurationError(f"OPENAI_{name.upper()}: must not be empty")

    def client(self) -> openai.OpenAI:
        """The SDK client, made once, with the settings checked first."""
        client: openai.OpenAI | None = self._client
        if client is None:
            self.check()
            import openai

            client = openai.OpenAI(
                api_key=self.api_key or KEY_NOT_NEEDED,
                base_url=self.base_url or DEFAULT_BASE_URL,
                timeout=openai.Timeout(self.timeout_seconds, connect=self.connect_timeout_seconds),
                max_retries=self.max_retries,
            )
            self._client = client
        return client

    # -- calls ---------------------------------------------------------------------------------------------

    def chat(self, context: Context, messages: Sequence[Message], *, json_mode: bool = False) -> Completion:
        """One chat completion; ``json_mode`` asks for a JSON object (the prompt must say "JSON")."""
        extra: dict[str, Any] = {"response_format": {"type": "json_object"}} if json_mode else {}
        started = time.perf_counter()
        with self._errors("chat"):
            response = self.client().chat.completions.create(
                model=self.chat_model,
                messages=list(messages),  # type: ignore[arg-type]
                **extra,
            )
        text = (response.choices[0].message.content or "") if response.choices else ""
        usage = TokenUsage(
            input_tokens=response.usage.prompt_tokens if response.usage else 0,
            output_tokens=response.usage.completion_tokens if response.usage else 0,
            calls=1,
            model=response.model or self.chat_model,
        )
        self._record(context, "chat", usage, time.perf_counter() - started, json_mode=json_mode)
        return Completion(text=text, model=usage.model, usage=usage)

    def chat_json(
        self, context: Context, messages: Sequence[Message], schema: type[M], *, attempts: int = 2
    ) -> tuple[M, TokenUsage]:
        """A reply in JSON mode validated against ``schema``. A reply that is not valid JSON for it is asked
        for once more (the model is told what was wrong); after ``attempts`` bad replies, a non-retryable
        ``AIError`` says which rule the last one broke."""
        shape = json.dumps(schema.model_json_schema(), separators=(",", ":"))
        conversation = [
            {
                "role": "system",
                "content": f"Answer with one JSON object that follows this JSON schema: {shape}",
            },
            *messages,
        ]
        used = TokenUsage()
        problem = ""
        for attempt in range(1, attempts + 1):
            reply = self.chat(context, conversation, json_mode=True)
            used += reply.usage
            try:
                return schema.model_validate_json(reply.text), used
            except ValidationError as error:
                problem = _first_problem(error)
            StepLog(context).warning("invalid JSON reply", {"attempt": attempt, "problem": problem})
            conversation += [
                {"role": "assistant", "content": reply.text},
                {"role": "user", "content": f"That was not valid: {problem}. Send the JSON object again."},
            ]
        raise AIError(
            f"the model sent invalid JSON {attempts} times for {schema.__name__}: {problem}", retryable=False
        )

    def image(self, context: Context, prompt: str) -> GeneratedImage:
        """One generated image, as bytes or as a short-lived URL (whichever the provider sends)."""
        extra: dict[str, Any] = {}
        if self.image_response_format:
            extra["response_format"] = self.image_response_format
        started = time.perf_counter()
        with self._errors("image"):
            response = self.client().images.generate(
                model=self.image_model,
                prompt=prompt,
                size=self.image_size,
                n=1,
                **extra,
            )
        if not response.data:
            raise AIError("image: the provider returned no image", retryable=True)
        item = response.data[0]
        reported = getattr(response, "usage", None)
        usage = TokenUsage(
            input_tokens=getattr(reported, "input_tokens", 0) or 0,
            output_tokens=getattr(reported, "output_tokens", 0) or 0,
            images=1,
            calls=1,
            model=self.image_model,
        )
        self._record(context, "image", usage, time.perf_counter() - started)
        data = _b64decode(item.b64_json) if item.b64_json else None
        if data is None and not item.url:
            raise AIError("image: the provider sent neither b64_json nor a url", retryable=True)
        return GeneratedImage(data=data, url=item.url, revised_prompt=item.revised_prompt, usage=usage)

    # -- recording and errors ----------------------------------------------------------------------------

    def _record(self, context: Context, call: str, usage: TokenUsage, seconds: float, **fields: Any) -> None:
        """A log line per call, and the step's output metadata summed over its calls."""
        StepLog(context).info(
            f"openai {call}",
            {"model": usage.model, "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
             "images": usage.images, "duration_s": round(seconds, 3), **fields},
        )  # fmt: skip
        before = context.get_output_metadata("result") or {}
        total = _usage_from_metadata(before) + usage
        context.add_output_metadata(
            {
                "openai_model": total.model,
                "openai_calls": total.calls,
                "openai_input_tokens": total.input_tokens,
                "openai_output_tokens": total.output_tokens,
                "openai_total_tokens": total.total_tokens,
                "openai_images": total.images,
            }
        )

    @contextmanager
    def _errors(self, call: str) -> Iterator[None]:
        """The SDK's exceptions (raised after its retries) as one-line ``AIError``s without the key."""
        import openai

        where = urlsplit(self.base_url or DEFAULT_BASE_URL).netloc
        try:
            yield
        except openai.APIStatusError as error:
            status = error.status_code
            retryable = status in (408, 409, 429) or status >= 500
            failure = self._error(f"{call}: HTTP {status} from {where} ({_error_kind(error)})", retryable)
        except openai.APITimeoutError:
            failure = self._error(f"{call}: timed out waiting for {where}", True)
        except openai.APIConnectionError:
            failure = self._error(f"{call}: could not connect to {where}", True)
        else:
            return
        # Raised outside the except block, without the SDK's exception as context: its text (and the
        # request it quotes) comes from the server and is not ours to vouch for.
        raise failure

    def _error(self, text: str, retryable: bool) -> AIError:
        text = redact(" ".join(text.split()))
        if self.api_key:
            text = text.replace(self.api_key, "***")
        return AIError(text, retryable=retryable)


def _error_kind(error: openai.APIStatusError) -> str:
    """The error's type as the API names it (``invalid_request_error``), else the SDK's class name. Never
    the server's message: that text is not ours to vouch for."""
    body = error.body
    inner = body.get("error", body) if isinstance(body, dict) else None
    kind = (inner.get("type") or inner.get("code")) if isinstance(inner, dict) else None
    return upstream_error_kind(kind, type(error).__name__)


def _first_problem(error: ValidationError) -> str:
    """The first thing wrong with a reply, on one line: ``field: rule`` or ``Invalid JSON: ...``."""
    item = error.errors()[0]
    where = ".".join(str(part) for part in item["loc"])
    return f"{where}: {item['msg']}" if where else item["msg"]


def _usage_from_metadata(metadata: Any) -> TokenUsage:
    def number(key: str) -> int:
        value = metadata.get(key, 0)
        return int(getattr(value, "value", value) or 0)

    model = metadata.get("openai_model", "")
    return TokenUsage(
        input_tokens=number("openai_input_tokens"),
        output_tokens=number("openai_output_tokens"),
        images=number("openai_images"),
        calls=number("openai_calls"),
        model=str(getattr(model, "value", model) or ""),
    )


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise AIError("image: the provider sent b64_json that is not base64", retryable=True) from None
