"""Retrieval quality with the real bundled embedding model, end to end through the web chat.

The corpus (tests/data/rag_corpus) is 24 short fictional documents, half English and half Chinese,
and 80 questions with known answers, 25 of them asked in the other language than their document.
The OpenAI stand-in plays a reader that answers from the passage holding the known answer and cites
it, then cites every other passage it was given, so the reply's sources show all retrieved passages.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from handlers.retrieval import SYSTEM
from tests.conftest import AppFactory
from tests.integration.test_docs import final_text, upload
from tests.support.openai_stub import OpenAIStub, Reply, message_text
from tests.support.web_client import Visitor

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

CORPUS = Path(__file__).resolve().parents[1] / "data" / "rag_corpus"
QUESTIONS: list[dict[str, Any]] = json.loads((CORPUS / "questions.json").read_text(encoding="utf-8"))
UNANSWERABLE: list[dict[str, Any]] = json.loads((CORPUS / "unanswerable.json").read_text(encoding="utf-8"))
PASSAGE = re.compile(r'<passage n="(\d+)" source="[^"]*">\n(.*?)\n</passage>', re.S)
FAST = {"per_user_per_minute": 6000, "burst": 500}
SOURCE = re.compile(r"^\[(\d+)\] .* — (\S+) #\d+$", re.M)


def reader(answers: dict[str, str]):  # type: ignore[no-untyped-def]
    def reply(body: dict[str, Any]) -> Reply:
        if message_text(body["messages"][0]["content"]) != SYSTEM:
            return Reply(text="ok")
        user = message_text(body["messages"][-1]["content"])
        question = user.rsplit("Question: ", 1)[1].strip()
        answer = answers.get(question, "")
        passages = PASSAGE.findall(user)
        holding = [n for n, text in passages if answer and answer.lower() in text.lower()]
        every = "".join(f"[{n}]" for n, _ in passages)
        if holding:
            return Reply(text=f"{answer} [{holding[0]}] (see also {every})")
        return Reply(text=f"I could not find it in these passages. {every}")

    return reply


async def test_recall_at_5_and_citations_on_the_bilingual_corpus(app_factory: AppFactory,
                                                                 openai_stub: OpenAIStub) -> None:
    openai_stub.responder = reader({q["q"]: q["answer"] for q in QUESTIONS})
    app = await app_factory(real=("embeddings",), limits={"max_upload_mb": 5}, rate_limit=FAST)
    documents = sorted(CORPUS.glob("[0-9][0-9]-*.md"))
    assert len(documents) >= 20
    hits: dict[str, list[bool]] = {"all": [], "en": [], "zh": [], "cross": []}
    cited_right = refused = 0
    misses = []
    async with Visitor(app.url) as v:
        for path in documents:
            await final_text(v, await upload(v, path.name, path.read_bytes()), "Added to the knowledge base")
        for q in QUESTIONS:
            mid = await v.send(f"/ask {q['q']}")
            await v.wait_for(lambda f, m=mid: f.get("reply_to") == m, timeout=30)
            first = v.replies(mid)[0]["text"]
            text = first if "could not find" in first else await final_text(v, mid, "Sources")
            refused += text == first and "could not find" in first
            sources = SOURCE.findall(text)
            names = [name for _, name in sources]
            hit = q["doc"] in names[:5]
            for key in ("all", q["lang"], *(("cross",) if q.get("cross") else ())):
                hits[key].append(hit)
            if not hit:
                misses.append((q["q"], q["doc"], names))
            if text.lower().startswith(q["answer"].lower()) and sources and sources[0][1] == q["doc"]:
                cited_right += 1
    recall = {k: sum(v) / len(v) for k, v in hits.items()}
    print(f"recall@5 {recall}; answers citing the right document first: {cited_right}/{len(QUESTIONS)}; "
          f"refused as not in the documents: {refused}")
    for miss in misses:
        print("MISS", miss)
    assert len(QUESTIONS) >= 40 and hits["cross"]
    assert recall["all"] >= 0.9, recall  # a refused question counts as a miss
    assert refused <= 2
    assert recall["en"] >= 0.85 and recall["zh"] >= 0.85, recall
    # When the right passage was retrieved, the answer cites it (its first source is the right document).
    assert cited_right >= 0.85 * len(QUESTIONS)


async def test_off_topic_questions_are_not_answered(app_factory: AppFactory, openai_stub: OpenAIStub) -> None:
    openai_stub.responder = reader({})
    app = await app_factory(real=("embeddings",), limits={"max_upload_mb": 5}, rate_limit=FAST)
    not_found = 0
    async with Visitor(app.url) as v:
        for path in sorted(CORPUS.glob("[0-9][0-9]-*.md")):
            await final_text(v, await upload(v, path.name, path.read_bytes()), "Added to the knowledge base")
        for q in UNANSWERABLE:
            mid = await v.send(f"/ask {q['q']}")
            text = await final_text(v, mid, "")
            not_found += "could not find" in text or "没有找到" in text
    print(f"off-topic questions refused: {not_found}/{len(UNANSWERABLE)}")
    # The similarity filter catches most; the model is told to say so for the rest (5-6 of 8 measured here,
    # varying with how the embeddings engine batched the documents).
    assert not_found >= len(UNANSWERABLE) // 2
