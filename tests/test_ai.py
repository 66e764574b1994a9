"""The OpenAI resource with the real ``openai`` SDK against a fake OpenAI server on 127.0.0.1: chat and JSON
mode, images as b64_json and as a URL, usage and model recorded as step metadata and log lines, the SDK's
retries (429 with Retry-After waited for, 500 then success), invalid JSON asked for once more then a clear
failure, provider errors as one line without the key, and the missing-configuration failure that stops a
run before its first step."""

import base64
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
import pytest
from pydantic import BaseModel

from offload import paths
from offload.errors import ConfigurationError
from resources import resources_for
from resources.ai import AIError, OpenAIResource
from tests.support.openai_server import CHAT, IMAGES, Failure, FakeOpenAI, openai_server
from tests.support.runs import output_metadata

API_KEY = "sk-test-0123456789abcdef"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with openai_server() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    server.reset()
    yield server
    server.reset()


def run_op(resource: OpenAIResource, body: Callable[[dg.OpExecutionContext, OpenAIResource], Any]) -> Any:
    """Run ``body`` inside a one-step job (the resource records into a real step context); return the job
    result, whose ``output_for_node("call")`` is what ``body`` returned."""

    @dg.op
    def call(context: dg.OpExecutionContext, openai: OpenAIResource) -> Any:
        return body(context, openai)

    @dg.job
    def one_call() -> None:
        call()

    return one_call.execute_in_process(
        resources={"openai": resource}, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )


def log_lines(result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(result.run_id)]


def resource(fake: FakeOpenAI, **settings: Any) -> OpenAIResource:
    return OpenAIResource(api_key=API_KEY, base_url=fake.url, **settings)


class Reply(BaseModel):
    title: str
    words: int


# --- chat and metadata ------------------------------------------------------------------------------------


def test_chat_returns_text_and_records_model_and_tokens(fake):
    fake.chat = lambda body: "one two three"
    result = run_op(
        resource(fake), lambda ctx, ai: ai.chat(ctx, [{"role": "user", "content": "say it"}]).text
    )

    assert result.success and result.output_for_node("call") == "one two three"
    [request] = fake.of(CHAT)
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.body["model"] == "gpt-4o-mini" and "response_format" not in request.body
    usage = fake.reported_usage[0]
    assert output_metadata(result) == {
        "openai_model": "gpt-4o-mini-0001",  # the model that answered, as the server named it
        "openai_calls": 1,
        "openai_input_tokens": usage["prompt_tokens"],
        "openai_output_tokens": 3,
        "openai_total_tokens": usage["prompt_tokens"] + 3,
        "openai_images": 0,
    }


def test_metadata_sums_every_call_of_a_step_and_each_call_is_logged(fake):
    def three_calls(ctx, ai):
        for _ in range(3):
            ai.chat(ctx, [{"role": "user", "content": "hello there"}])

    instance = dg.DagsterInstance.ephemeral()

    @dg.op
    def calls(context: dg.OpExecutionContext, openai: OpenAIResource) -> None:
        three_calls(context, openai)

    @dg.job
    def job() -> None:
        calls()

    result = job.execute_in_process(
        resources={"openai": resource(fake, chat_model="small-model")}, instance=instance
    )

    metadata = output_metadata(result)
    assert metadata["openai_calls"] == 3
    assert metadata["openai_input_tokens"] == sum(u["prompt_tokens"] for u in fake.reported_usage)
    assert metadata["openai_model"] == "small-model-0001"
    logged = [line for line in log_lines(result, instance) if line.startswith("openai chat {")]
    assert len(logged) == 3 and '"model": "small-model-0001"' in logged[0]


def test_json_mode_reply_is_validated_against_the_schema(fake):
    fake.chat = lambda body: '{"title": "Hi", "words": 2}'
    result = run_op(
        resource(fake), lambda ctx, ai: ai.chat_json(ctx, [{"role": "user", "content": "JSON"}], Reply)[0]
    )

    assert result.output_for_node("call") == Reply(title="Hi", words=2)
    [request] = fake.of(CHAT)
    assert request.body["response_format"] == {"type": "json_object"}
    assert '"title"' in request.body["messages"][0]["content"]  # the fields are named to the model


def test_invalid_json_is_asked_for_once_more(fake):
    replies = iter(['{"title": "Hi", "words": ', '{"title": "Hi", "words": 2}'])
    fake.chat = lambda body: next(replies)
    result = run_op(
        resource(fake), lambda ctx, ai: ai.chat_json(ctx, [{"role": "user", "content": "JSON"}], Reply)
    )

    reply, usage = result.output_for_node("call")
    assert reply.words == 2 and usage.calls == 2
    retry = fake.of(CHAT)[1].body["messages"]
    assert retry[-2] == {"role": "assistant", "content": '{"title": "Hi", "words": '}
    assert retry[-1]["content"].startswith("That was not valid: Invalid JSON")


def test_invalid_json_twice_fails_clearly_without_a_third_call(fake):
    fake.chat = lambda body: '{"title": "Hi"}'  # valid JSON, but "words" is missing
    result = run_op(
        resource(fake), lambda ctx, ai: ai.chat_json(ctx, [{"role": "user", "content": "JSON"}], Reply)
    )

    assert not result.success
    assert fake.count(CHAT) == 2
    [failure] = result.get_step_failure_events()
    error = failure.step_failure_data.error.cause  # the step's error is Dagster's wrapper of ours
    assert error.cls_name == "AIError"
    assert error.message.strip() == (
        "resources.ai.AIError: the model sent invalid JSON 2 times for Reply: words: Field required"
    )


# --- retries ----------------------------------------------------------------------------------------------


def test_rate_limit_is_retried_after_the_retry_after_header(fake):
    fake.fail_next[CHAT] = [Failure(429, {"Retry-After": "1"})]
    result = run_op(resource(fake), lambda ctx, ai: ai.chat(ctx, [{"role": "user", "content": "x"}]).text)

    assert result.success
    first, second = fake.of(CHAT)
    # The SDK's own backoff for a first retry is at most 0.5 s: a wait of 1 s is the header's.
    assert second.at - first.at >= 1.0


def test_server_error_then_success(fake):
    fake.fail_next[CHAT] = [Failure(500), Failure(503)]
    result = run_op(resource(fake), lambda ctx, ai: ai.chat(ctx, [{"role": "user", "content": "x"}]).text)

    assert result.success and fake.count(CHAT) == 3


def test_server_errors_past_max_retries_fail_as_retryable(fake):
    fake.fail_next[CHAT] = [Failure(500)] * 3

    def call(ctx, ai):
        try:
            ai.chat(ctx, [{"role": "user", "content": "x"}])
        except AIError as error:
            return str(error), error.retryable
        return None

    result = run_op(resource(fake, max_retries=1), call)

    assert fake.count(CHAT) == 2  # the first attempt and one retry
    assert result.output_for_node("call") == (f"chat: HTTP 500 from {fake.origin} (server_error)", True)


def test_provider_error_is_one_line_without_the_api_key(fake):
    fake.fail_next[CHAT] = [
        Failure(401, body={"error": {"message": f"Incorrect API key provided:\n{API_KEY}"}})
    ]

    def call(ctx, ai):
        with pytest.raises(AIError) as caught:
            ai.chat(ctx, [{"role": "user", "content": "x"}])
        return str(caught.value), caught.value.retryable

    result = run_op(resource(fake), call)

    text, retryable = result.output_for_node("call")
    assert text == f"chat: HTTP 401 from {fake.origin} (AuthenticationError)"
    assert retryable is False and fake.count(CHAT) == 1  # a 401 is not retried


def test_provider_error_text_is_never_repeated_only_its_status_and_type(fake):
    """A hostile endpoint echoed the API key in base64 inside its error message: the message is dropped,
    the status and the error type the API names are kept."""
    echoed = base64.b64encode(f"your key was {API_KEY}".encode()).decode()
    fake.fail_next[CHAT] = [
        Failure(400, body={"error": {"message": f"bad request {echoed}", "type": "invalid_request_error"}})
    ]
    fake.fail_next[IMAGES] = [Failure(400, body={"error": {"message": echoed, "type": f"x {echoed}"}})]

    def call(ctx, ai):
        texts = []
        for attempt in (lambda: ai.chat(ctx, [{"role": "user", "content": "x"}]), lambda: ai.image(ctx, "x")):
            with pytest.raises(AIError) as caught:
                attempt()
            texts.append(str(caught.value))
        return texts

    chat, image = run_op(resource(fake), call).output_for_node("call")
    assert chat == f"chat: HTTP 400 from {fake.origin} (invalid_request_error)"
    assert image == f"image: HTTP 400 from {fake.origin} (BadRequestError)"  # a type that is not a name


# --- images -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["b64_json", "url"])
def test_image_comes_back_as_bytes_or_as_a_link(fake, mode):
    fake.image_mode = mode
    result = run_op(
        resource(fake, image_model="img-1", image_size="1536x1024"), lambda ctx, ai: ai.image(ctx, "a fox")
    )

    image = result.output_for_node("call")
    [request] = fake.of(IMAGES)
    assert request.body == {"model": "img-1", "prompt": "a fox", "size": "1536x1024", "n": 1}
    if mode == "b64_json":
        assert image.data == fake.image and image.url is None
    else:
        assert image.data is None and image.url.startswith(f"http://{fake.origin}/files/hero.png?")
    assert image.usage.images == 1 and image.usage.output_tokens == 272
    assert output_metadata(result)["openai_images"] == 1


# --- configuration ----------------------------------------------------------------------------------------


def test_base_url_alone_is_enough_for_a_server_without_keys(fake):
    result = run_op(
        OpenAIResource(base_url=fake.url),
        lambda ctx, ai: ai.chat(ctx, [{"role": "user", "content": "x"}]).text,
    )

    assert result.success
    assert fake.of(CHAT)[0].headers["authorization"] == "Bearer not-needed"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "OPENAI_API_KEY is not set: set it to your OpenAI API key, or set OPENAI_BASE_URL"),
        ({"base_url": "ftp://models.local/v1"}, "OPENAI_BASE_URL: must be an http(s) URL"),
        ({"api_key": "k", "chat_model": " "}, "OPENAI_CHAT_MODEL: must not be empty"),
    ],
)
def test_bad_settings_name_the_variable(settings, message):
    with pytest.raises(ConfigurationError) as caught:
        OpenAIResource(**settings).check()
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_run_without_key_or_base_url_fails_before_its_first_step(data_dir, monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OFFLOAD_ENV", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    from pipelines.content import generate_content

    instance = dg.DagsterInstance.ephemeral()
    result = generate_content.execute_in_process(
        run_config={"topic": "tides"},
        resources=resources_for(paths.environment()),
        instance=instance,
        raise_on_error=False,
    )

    assert not result.success
    kinds = [e.event_type_value for e in result.all_events]
    assert "STEP_START" not in kinds and "RESOURCE_INIT_FAILURE" in kinds
    [init_failure] = [e for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE"]
    line = init_failure.event_specific_data.error.message.strip()
    assert line == (
        "offload.exceptions.ConfigurationError: OPENAI_API_KEY is not set: set it to your OpenAI API key, "
        "or set OPENAI_BASE_URL to an OpenAI-compatible server that needs no key"
    )


def test_environment_binds_key_and_base_url_without_showing_them(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_CHAT_MODEL", "llama3.2")
    monkeypatch.setenv("OPENAI_MAX_RETRIES", "5")

    ai = resources_for(paths.LOCAL)["openai"]

    assert isinstance(ai, OpenAIResource)
    assert (ai.chat_model, ai.max_retries) == ("llama3.2", 5)
    # EnvVar bindings: Dagster resolves them at run time and shows the variable's name, not its value.
    assert API_KEY not in repr(ai.model_dump())
