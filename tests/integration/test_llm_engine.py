"""The chat engine against the OpenAI stand-in: tools both ways, streaming, errors as messages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from bot.errors import UserFacingError
from engines.base import EngineRequest
from engines.llm import ChatEngine, ChatRequest, ChatResult, TokenizeRequest
from handlers.tools import Tool, ToolBox
from tests.support.openai_stub import OpenAIStub, Reply


async def _now(args: dict[str, Any], ctx: Any) -> str:
    return "12:00"


CLOCK = Tool("get_time", "The current time", {"type": "object", "properties": {"tz": {"type": "string"}},
                                              "required": ["tz"]}, _now)


@pytest_asyncio.fixture(loop_scope="session")
async def engine(openai_stub: OpenAIStub) -> AsyncIterator[ChatEngine]:
    chat = ChatEngine(provider="openai", base_url=f"{openai_stub.url}/v1", model="gpt-4o-mini", max_retries=0)
    chat.load()
    yield chat
    chat.unload()


def ask(text: str, **options: Any) -> EngineRequest:
    return EngineRequest(ChatRequest(messages=[{"role": "user", "content": text}], **options))


async def test_tools_are_declared_and_tool_calls_parsed(engine: ChatEngine, openai_stub: OpenAIStub) -> None:
    box = ToolBox([CLOCK])
    openai_stub.script(Reply(tool_calls=[{"name": "get_time", "arguments": {"tz": "UTC"}}]))
    [result] = await engine.run([ask("what time is it?", tools=box.specs())])
    assert openai_stub.chat_requests()[-1]["tools"] == [CLOCK.spec()]
    assert isinstance(result, ChatResult) and result.tool_calls[0].name == "get_time"
    assert await box.call(result.tool_calls[0], None) == "12:00"  # type: ignore[arg-type]


async def test_streamed_tool_calls_reassemble(engine: ChatEngine, openai_stub: OpenAIStub) -> None:
    openai_stub.script(Reply(tool_calls=[{"name": "get_time", "arguments": {"tz": "Asia/Shanghai"}}]))
    chunks = [c async for c in engine.stream(ask("time in Shanghai?", tools=ToolBox([CLOCK]).specs()))]
    result = chunks[-1]
    assert isinstance(result, ChatResult)
    assert json.loads(result.tool_calls[0].arguments) == {"tz": "Asia/Shanghai"}


async def test_tool_call_written_as_json_in_text(engine: ChatEngine, openai_stub: OpenAIStub) -> None:
    text = 'To answer, I call:\n```json\n{"name": "get_time", "arguments": {"tz": "UTC"}}\n```'
    openai_stub.script(Reply(text=text))
    chunks = [c async for c in engine.stream(ask("time?", tools=ToolBox([CLOCK]).specs()))]
    assert "".join(c for c in chunks if isinstance(c, str)) == text
    assert chunks[-1].tool_calls[0].parsed() == {"tz": "UTC"}


async def test_tool_arguments_are_validated(engine: ChatEngine, openai_stub: OpenAIStub) -> None:
    box = ToolBox([CLOCK])
    for arguments, key in (("{broken", "tool_args_invalid"), ({}, "tool_args_missing"),
                           ({"tz": 5}, "tool_args_type"), ({"tz": "UTC", "x": 1}, "tool_args_unknown")):
        openai_stub.script(Reply(tool_calls=[{"name": "get_time", "arguments": arguments}]))
        [result] = await engine.run([ask("time?", tools=box.specs())])
        with pytest.raises(UserFacingError) as info:
            box.prepare(result.tool_calls[0])
        assert info.value.key == key
    openai_stub.script(Reply(tool_calls=[{"name": "rm", "arguments": {}}]))
    [result] = await engine.run([ask("time?", tools=box.specs())])
    with pytest.raises(UserFacingError, match="tool_unknown"):
        box.prepare(result.tool_calls[0])


async def test_tokenize_and_usage(engine: ChatEngine, openai_stub: OpenAIStub) -> None:
    [tokens] = await engine.run([EngineRequest(TokenizeRequest("hello world"))])
    assert tokens == openai_stub.tokenizer.encode("hello world")
    chunks = [c async for c in engine.stream(ask("one two three"))]
    assert chunks[-1].tokens_in > 0 and chunks[-1].tokens_out > 0


async def test_provider_errors_become_messages(engine: ChatEngine, openai_stub: OpenAIStub) -> None:
    openai_stub.script(Reply(status=400))
    [result] = await engine.run([ask("x")])
    assert isinstance(result, UserFacingError) and result.key == "llm_bad_request"
    openai_stub.script(Reply(status=500))
    with pytest.raises(UserFacingError) as info:
        [c async for c in engine.stream(ask("x"))]
    assert info.value.key == "llm_provider_error"
