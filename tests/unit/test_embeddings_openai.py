"""OpenAIEmbeddingEngine against the loopback OpenAI stand-in."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from bot.errors import EngineUnavailable, UserFacingError
from engines.base import EngineRequest
from engines.embeddings import Embeddings, EmbedRequest, OpenAIEmbeddingEngine
from tests.support.openai_stub import OpenAIStub

KEY_ENV = "TEST_EMBED_API_KEY"


@pytest.fixture
def stub(openai_stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIStub]:
    openai_stub.reset()
    openai_stub.api_key = "sk-embed"
    monkeypatch.setenv(KEY_ENV, "sk-embed")
    yield openai_stub
    openai_stub.reset()


def make_engine(stub: OpenAIStub, **options: object) -> OpenAIEmbeddingEngine:
    engine = OpenAIEmbeddingEngine(base_url=stub.url + "/v1", api_key_env=KEY_ENV, max_retries=0, **options)  # type: ignore[arg-type]
    engine.load()
    return engine


def embedding_bodies(stub: OpenAIStub) -> list[dict[str, Any]]:
    return [r.body for r in stub.requests if r.path == "/v1/embeddings" and isinstance(r.body, dict)]


async def test_batch_merged_into_one_call_per_kind_and_split_back(stub: OpenAIStub) -> None:
    engine = make_engine(stub, model="text-embedding-3-small", dimensions=32, query_prefix="query: ")
    payloads = [EmbedRequest(["red apple", "green pear"]), EmbedRequest(["apple"], "query"),
                EmbedRequest(["blue sky"]), EmbedRequest([])]
    results = await engine.run([EngineRequest(p) for p in payloads])

    bodies = embedding_bodies(stub)
    assert sorted((b["input"] for b in bodies), key=len) == [["query: apple"], ["red apple", "green pear", "blue sky"]]
    assert all(b["model"] == "text-embedding-3-small" and b["dimensions"] == 32 for b in bodies)
    assert all(r.authorized for r in stub.requests)

    for payload, result in zip(payloads, results, strict=True):
        assert isinstance(result, Embeddings)
        assert result.model == "text-embedding-3-small"
        assert len(result.vectors) == len(payload.texts)
        for text, vector in zip(payload.texts, result.vectors, strict=True):
            assert len(vector) == 32
            assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, abs_tol=1e-5)
            prefix = "query: " if payload.kind == "query" else ""
            expected = stub.embedder.embed(prefix + text, 32)
            assert all(math.isclose(a, b, abs_tol=1e-5) for a, b in zip(vector, expected, strict=True))
    assert results[0].dim == 32


async def test_empty_batch_makes_no_call(stub: OpenAIStub) -> None:
    engine = make_engine(stub)
    [result] = await engine.run([EngineRequest(EmbedRequest([], "query"))])
    assert isinstance(result, Embeddings) and result.vectors == []
    assert embedding_bodies(stub) == []


async def test_bad_payload_fails_only_its_request(stub: OpenAIStub) -> None:
    engine = make_engine(stub)
    bad, ok = await engine.run([EngineRequest("text"), EngineRequest(EmbedRequest(["hi"]))])
    assert isinstance(bad, TypeError)
    assert isinstance(ok, Embeddings) and ok.dim == 16


async def test_provider_errors_become_user_facing(stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    engine = make_engine(stub)
    [result] = await engine.run([EngineRequest(EmbedRequest(["hi"]))])
    assert isinstance(result, UserFacingError)
    assert result.key == "llm_auth"

    monkeypatch.setenv(KEY_ENV, "sk-embed")
    engine = make_engine(stub)
    [result] = await engine.run([EngineRequest(EmbedRequest([""]))])  # the API refuses empty strings
    assert isinstance(result, UserFacingError)
    assert result.key == "llm_bad_request"


def test_load_without_key_or_base_url_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(EngineUnavailable):
        OpenAIEmbeddingEngine(api_key_env=KEY_ENV).load()
