"""/topics end to end with the bundled embedding model: a channel's history of three clear topics
(English and Chinese mixed), told through the web chat, comes back as three topics of the right sizes,
named by the chat model (the OpenAI stand-in names each group by the words in its samples)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from handlers.textstats import NAMING_SYSTEM
from tests.conftest import AppFactory
from tests.integration.test_docs import final_text
from tests.models.test_textstats_models import TOPICS
from tests.support.openai_stub import OpenAIStub, Reply, message_text
from tests.support.web_client import Visitor

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

KEYWORDS = {"deploy": ("deploy", "ci", "pipeline", "build", "部署", "流水线", "构建"),
            "food": ("lunch", "pizza", "restaurant", "sushi", "午饭", "吃", "餐"),
            "hiring": ("interview", "candidate", "hire", "面试", "候选人", "招聘")}


def namer(body: dict[str, Any]) -> Reply:
    if message_text(body["messages"][0]["content"]) not in NAMING_SYSTEM.values():
        return Reply(text="ok")
    user = message_text(body["messages"][-1]["content"])
    names = {}
    for block in re.split(r"\n\n", user):
        head = re.match(r"(?:Group|第) ?(\d+)", block)
        if head is None:
            continue
        text = block.lower()
        names[head.group(1)] = max(KEYWORDS, key=lambda topic: sum(text.count(w) for w in KEYWORDS[topic]))
    return Reply(text=json.dumps(names))


async def test_topics_finds_the_three_topics_of_a_bilingual_channel(app_factory: AppFactory,
                                                                    openai_stub: OpenAIStub) -> None:
    assert set(TOPICS) == set(KEYWORDS)
    openai_stub.responder = namer
    app = await app_factory(real=("embeddings",), rate_limit={"per_user_per_minute": 6000, "burst": 500})
    history = [text for i in range(20) for topic in sorted(TOPICS) for text in [TOPICS[topic][i]]]
    async with Visitor(app.url) as v:
        for text in history:
            await final_text(v, await v.send(text), "ok")
        for command in ("/topics 3", "/topics"):
            card = await final_text(v, await v.send(command), "topics in the last")
            found = dict(re.findall(r"\*(\w+)\*: (\d+) messages", card))
            print(command, found)
            assert set(found) == set(TOPICS), card
            # Each cluster is named for one topic and holds about its 20 messages (message-level purity of the
            # same clustering is measured in test_textstats_models.py).
            assert sum(abs(int(n) - 20) for n in found.values()) <= 6, found
