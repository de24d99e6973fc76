"""Chat with memory on the real bundled model, end to end through the web adapter."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.app import start
from bot.settings import Settings
from tests.support.web_client import Visitor

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
UNRELATED = [
    "What is the capital of France?",
    "Give me one tip for writing clear emails.",
    "What is 12 times 7?",
    "Name a fruit that is yellow.",
    "What does HTTP stand for?",
]


async def answer_to(v: Visitor, mid: str) -> dict[str, Any]:
    """The final frame of the streamed answer to `mid`: the one carrying the feedback buttons."""

    def final(frame: dict[str, Any]) -> bool:
        if frame.get("type") == "error" and frame.get("reply_to") == mid:
            raise AssertionError(frame["text"])
        ours = {x["id"] for x in v.replies(mid) if x.get("type") == "message"}
        return frame.get("id") in ours and any(b["action_id"] == "feedback" for b in frame.get("buttons", []))

    return await v.wait_for(final, timeout=180)


async def test_summary_buffer_remembers_name_and_team(
    tmp_path: Path, database_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        tmp_path, database_url, server={"port": 0},
        rate_limit={"per_user_per_minute": 600, "burst": 50},
        # small budget: the first turn is folded into the summary before the question comes
        chat={"memory": "summary_buffer", "buffer_tokens": 80, "max_tokens": 60, "temperature": 0.0},
    )
    settings.engines["llm"] = settings.engines["llm"].model_copy(
        update={"options": {"provider": "local", "cache_dir": str(ROOT / ".data" / "models"), "ctx_size": 4096}}
    )
    app = await start(settings)
    started = time.monotonic()
    try:
        async with Visitor(app.url) as v:
            turns = ["My name is Lin and I work on the payments team.", *UNRELATED]
            for text in turns:
                await answer_to(v, await v.send(text))
            answer = await answer_to(v, await v.send("What is my name and which team do I work on?"))
        conversation_rows = await app.services.store.memory.summary(
            await app.services.store.conversations.current(
                await app.services.store.identity.ensure("web", "web", f"dm-{v.visitor}", v.visitor),
                f"dm:{v.visitor}"))
        print(f"\nsummary: {conversation_rows.text!r}\nanswer: {answer['text']!r}\n"
              f"took {time.monotonic() - started:.1f} s")
        assert conversation_rows.upto > 0, "the first turn should have been folded into the summary"
        assert "lin" in answer["text"].lower() and "payment" in answer["text"].lower()
    finally:
        await app.stop()
