"""The OpenAI stand-in answers the real `openai` SDK the way the API does."""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
import pytest_asyncio
from openai import AsyncAzureOpenAI, AsyncOpenAI

from tests.support.openai_stub import OpenAIStub, Reply

USER: Any = [{"role": "user", "content": "what is the weather in Oslo?"}]
WEATHER_TOOL: Any = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}  # fmt: skip
GOOD_JSONL = (
    json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]})
    + "\n"
    + json.dumps({"messages": [{"role": "user", "content": "bye now"}, {"role": "assistant", "content": "see you"}]})
    + "\n"
).encode()


@pytest_asyncio.fixture(loop_scope="session")
async def stub() -> AsyncIterator[OpenAIStub]:
    async with OpenAIStub() as server:
        yield server


def sdk(stub: OpenAIStub, **options: Any) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=stub.url + "/v1", api_key="test", **options)


async def test_streamed_text_arrives_in_several_chunks_and_ends_with_usage(stub: OpenAIStub) -> None:
    stub.script(Reply(text="The weather in Oslo is mild today.", prompt_tokens=11, chunk_delay_s=0.01))
    async with sdk(stub) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) > 3
    assert "".join(texts) == "The weather in Oslo is mild today."
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (11, 7)
    assert all(c.model == "gpt-4o-mini" and c.object == "chat.completion.chunk" for c in chunks)


async def test_without_include_usage_no_chunk_carries_usage(stub: OpenAIStub) -> None:
    async with sdk(stub) as client:
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        chunks = [chunk async for chunk in stream]
    assert all(c.usage is None and c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: what is the weather in Oslo?"


async def test_streamed_tool_calls_reassemble_from_the_chunk_deltas(stub: OpenAIStub) -> None:
    calls: list[dict[str, Any]] = [{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}},
             {"name": "get_time", "arguments": '{"zone": "Europe/Oslo"}'}]  # fmt: skip
    stub.script(Reply(tool_calls=calls), Reply(text="Checking.", tool_calls=calls[:1]))
    async with sdk(stub) as client:
        stream = await client.chat.completions.create(model="m", messages=USER, tools=[WEATHER_TOOL], stream=True)
        parts: dict[int, dict[str, str]] = {}
        finish = None
        fragments = 0
        async for chunk in stream:
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for delta in choice.delta.tool_calls or []:
                    slot = parts.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                    slot["id"] = delta.id or slot["id"]
                    if delta.function is not None:
                        slot["name"] += delta.function.name or ""
                        slot["arguments"] += delta.function.arguments or ""
                        fragments += bool(delta.function.arguments)
        # The SDK's own accumulator (`.stream()`) reassembles them the same way.
        async with client.chat.completions.stream(model="m", messages=USER, tools=[WEATHER_TOOL]) as helper:
            final = await helper.get_final_completion()
    assert finish == "tool_calls"
    assert [p["name"] for p in parts.values()] == ["get_weather", "get_time"]
    assert json.loads(parts[0]["arguments"]) == {"city": "Oslo", "unit": "celsius"}
    assert json.loads(parts[1]["arguments"]) == {"zone": "Europe/Oslo"}
    assert fragments > 2  # arguments arrive in several pieces
    assert parts[0]["id"] == "call_1" and parts[1]["id"] == "call_2"
    message = final.choices[0].message
    assert message.content == "Checking."
    assert message.tool_calls is not None and message.tool_calls[0].id == "call_3"
    assert json.loads(message.tool_calls[0].function.arguments) == {"city": "Oslo", "unit": "celsius"}


async def test_non_streaming_tool_calls_and_usage(stub: OpenAIStub) -> None:
    stub.script(Reply(tool_calls=[{"name": "get_weather", "arguments": '{"city": "Oslo"}'}], completion_tokens=9))
    async with sdk(stub) as client:
        completion = await client.chat.completions.create(model="gpt-4.1", messages=USER, tools=[WEATHER_TOOL])
    choice = completion.choices[0]
    assert completion.object == "chat.completion" and completion.model == "gpt-4.1"
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id == "call_1"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (6, 9)


async def test_default_echo_and_responder(stub: OpenAIStub) -> None:
    async with sdk(stub) as client:
        echoed = await client.chat.completions.create(model="m", messages=USER)
        stub.responder = lambda body: Reply(text=f"{len(body['messages'])} messages")
        answered = await client.chat.completions.create(model="m", messages=USER * 2)
    assert echoed.choices[0].message.content == "echo: what is the weather in Oslo?"
    assert answered.choices[0].message.content == "2 messages"


async def test_rate_limit_with_retry_after_is_retried_then_succeeds(stub: OpenAIStub) -> None:
    stub.script(Reply(status=429, retry_after=0.2), Reply(text="made it"))
    async with sdk(stub, max_retries=2) as client:
        started = time.monotonic()
        completion = await client.chat.completions.create(model="m", messages=USER)
        waited = time.monotonic() - started
    assert completion.choices[0].message.content == "made it"
    assert len(stub.chat_requests()) == 2
    assert [r.headers["x-stainless-retry-count"] for r in stub.requests] == ["0", "1"]
    assert waited >= 0.2

    stub.script(Reply(status=429, retry_after=0.2))
    async with sdk(stub, max_retries=0) as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="m", messages=USER)
    assert caught.value.response.headers["retry-after"] == "0.2"
    assert caught.value.code == "rate_limit_exceeded"


async def test_server_error_without_retries_raises_internal_server_error(stub: OpenAIStub) -> None:
    stub.script(Reply(status=500, text="boom"))
    async with sdk(stub, max_retries=0) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="m", messages=USER, stream=True)
    assert caught.value.status_code == 500
    assert caught.value.body == {"message": "boom", "type": "server_error", "param": None, "code": None}
    assert len(stub.chat_requests()) == 1


async def test_delay_past_the_client_timeout_raises_timeout(stub: OpenAIStub) -> None:
    stub.script(Reply(text="too late", delay_s=5))
    async with sdk(stub, max_retries=0, timeout=0.2) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model="m", messages=USER)


async def test_recorded_requests_keep_every_parameter_but_not_the_key(stub: OpenAIStub) -> None:
    async with sdk(stub) as client:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=USER, logit_bias={"1234": -100}, seed=7, temperature=0.3,
            max_tokens=50, max_completion_tokens=60, response_format={"type": "json_object"}, tools=[WEATHER_TOOL],
        )  # fmt: skip
    [body] = stub.chat_requests()
    assert body["logit_bias"] == {"1234": -100} and body["seed"] == 7 and body["temperature"] == 0.3
    assert body["response_format"] == {"type": "json_object"} and body["tools"] == [WEATHER_TOOL]
    assert (body["max_tokens"], body["max_completion_tokens"]) == (50, 60)
    [recorded] = stub.requests
    assert recorded.method == "POST" and recorded.path == "/v1/chat/completions"
    assert recorded.authorized and "authorization" not in recorded.headers


async def test_azure_deployment_route_and_the_key_check(stub: OpenAIStub) -> None:
    stub.api_key = "right"
    azure = AsyncAzureOpenAI(azure_endpoint=stub.url, api_key="right", api_version="2024-10-21")
    async with azure, sdk(stub, max_retries=0) as wrong_key:
        completion = await azure.chat.completions.create(model="my-deployment", messages=USER)
        with pytest.raises(openai.AuthenticationError):
            await wrong_key.chat.completions.create(model="m", messages=USER)
    assert completion.choices[0].message.content == "echo: what is the weather in Oslo?"
    first = stub.requests[0]
    assert first.path == "/openai/deployments/my-deployment/chat/completions"
    assert first.query == {"api-version": "2024-10-21"}
    assert first.authorized and "api-key" not in first.headers


async def test_models_list_names_requested_models(stub: OpenAIStub) -> None:
    async with sdk(stub) as client:
        await client.chat.completions.create(model="my-model", messages=USER)
        models = [m.id async for m in client.models.list()]
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("never-seen")
    assert set(models) == {"gpt-4o-mini", "my-model"}


async def test_embeddings_are_deterministic_and_normalised(stub: OpenAIStub) -> None:
    texts = ["the cat sat", "the cat sat down", "quarterly revenue report"]
    async with sdk(stub) as client:
        first = await client.embeddings.create(model="text-embedding-3-small", input=texts)  # base64 on the wire
        again = await client.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")
        short = await client.embeddings.create(model="text-embedding-3-small", input="the cat", dimensions=8)
    vectors = [d.embedding for d in first.data]
    assert vectors == [d.embedding for d in again.data]
    assert all(len(v) == 16 and math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-5) for v in vectors)
    assert len(short.data[0].embedding) == 8
    cos = [sum(a * b for a, b in zip(vectors[0], v, strict=True)) for v in vectors[1:]]
    assert cos[0] > cos[1]  # shared words point alike
    assert first.usage.prompt_tokens == 10 and first.model == "text-embedding-3-small"
    assert stub.requests[0].body["encoding_format"] == "base64"


async def test_moderation_flags_a_set_word(stub: OpenAIStub) -> None:
    stub.flagged_words = {"Blorp"}
    async with sdk(stub) as client:
        result = await client.moderations.create(model="omni-moderation-latest", input=["hello", "you BLORP"])
    clean, flagged = result.results
    assert not clean.flagged and flagged.flagged
    assert flagged.categories.harassment and not flagged.categories.violence
    assert flagged.category_scores.harassment > 0.5 > clean.category_scores.harassment
    assert flagged.category_applied_input_types.self_harm == ["text"]


async def test_files_and_fine_tuning_flow(stub: OpenAIStub) -> None:
    async with sdk(stub) as client:
        uploaded = await client.files.create(file=("train.jsonl", GOOD_JSONL), purpose="fine-tune")
        assert (uploaded.filename, uploaded.bytes, uploaded.purpose) == ("train.jsonl", len(GOOD_JSONL), "fine-tune")
        assert (await client.files.retrieve(uploaded.id)).id == uploaded.id
        assert (await client.files.content(uploaded.id)).content == GOOD_JSONL
        assert stub.requests[0].body["file"]["filename"] == "train.jsonl"

        job = await client.fine_tuning.jobs.create(training_file=uploaded.id, model="gpt-4o-mini")
        assert job.status == "validating_files" and job.fine_tuned_model is None
        statuses = [(await client.fine_tuning.jobs.retrieve(job.id)).status for _ in range(2)]
        done = await client.fine_tuning.jobs.retrieve(job.id)
        assert statuses == ["running", "succeeded"] and done.status == "succeeded"
        assert done.fine_tuned_model == "ft:gpt-4o-mini:stub:1"
        assert done.trained_tokens == 3 * 7  # three epochs over seven words
        events = [e.message async for e in client.fine_tuning.jobs.list_events(job.id)]
        assert events[0] == "The job has successfully completed" and len(events) == 4
        assert "ft:gpt-4o-mini:stub:1" in [m.id async for m in client.models.list()]
        with pytest.raises(openai.BadRequestError):
            await client.fine_tuning.jobs.cancel(job.id)

        stub.fail_finetune = True
        failing = await client.fine_tuning.jobs.create(training_file=uploaded.id, model="gpt-4o-mini")
        for _ in range(3):
            failing = await client.fine_tuning.jobs.retrieve(failing.id)
        assert failing.status == "failed" and failing.error is not None and failing.fine_tuned_model is None


async def test_fine_tuning_rejects_bad_training_files(stub: OpenAIStub) -> None:
    async with sdk(stub) as client:
        bad = await client.files.create(file=("bad.jsonl", b'{"prompt": "x"}\nnot json\n'), purpose="fine-tune")
        with pytest.raises(openai.BadRequestError) as caught:
            await client.fine_tuning.jobs.create(training_file=bad.id, model="gpt-4o-mini")
        assert caught.value.param == "training_file"
        with pytest.raises(openai.BadRequestError):
            await client.fine_tuning.jobs.create(training_file="file-unknown", model="gpt-4o-mini")
        with pytest.raises(openai.NotFoundError):
            await client.files.retrieve("file-unknown")
    assert stub.fine_tuning.jobs == {}


async def test_tokenize_is_deterministic_and_round_trips(stub: OpenAIStub) -> None:
    async with aiohttp.ClientSession(stub.url) as http:
        async def post(path: str, body: dict[str, Any]) -> Any:
            async with http.post(path, json=body) as response:
                assert response.status == 200
                return await response.json()

        one = (await post("/tokenize", {"content": "Hello, world!", "add_special": False}))["tokens"]
        two = (await post("/tokenize", {"content": "Hello, world!", "add_special": True}))["tokens"]
        text = (await post("/detokenize", {"tokens": one}))["content"]
        pieces = (await post("/tokenize", {"content": "Hi!", "with_pieces": True}))["tokens"]
        async with http.get("/health") as response:
            health = await response.json()
    assert len(one) == 4 and all(1000 <= t < 151000 for t in one)
    assert two == [1, *one]
    assert text == "Hello, world!"
    assert [p["piece"] for p in pieces] == ["Hi", "!"]
    assert health == {"status": "ok"}
    assert [r.path for r in stub.requests[:3]] == ["/tokenize", "/tokenize", "/detokenize"]
    assert stub.requests[0].body == {"content": "Hello, world!", "add_special": False}


async def test_unknown_routes_answer_in_the_openai_error_shape(stub: OpenAIStub) -> None:
    async with aiohttp.ClientSession(stub.url) as http, http.post("/v1/nothing", json={}) as response:
        body = await response.json()
    assert response.status == 404
    assert body["error"]["message"] == "Invalid URL (POST /v1/nothing)"
    assert set(body["error"]) == {"message", "type", "param", "code"}
