"""The agent with the real bundled chat model (Qwen2.5-Coder 0.5B in llama.cpp): it writes its tool calls as JSON
in its text, which the chat engine parses; the tools run for real (tiny image models draw)."""

from __future__ import annotations

import pytest

from tests.conftest import AppFactory
from tests.integration.test_images import SMALL, is_image, wait
from tests.support.image_models import TinyModels, image_engines
from tests.support.web_client import Visitor

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]


def steps(v: Visitor, mid: str) -> list[str]:
    return [f["text"] for f in v.replies(mid) if f.get("type") == "message" and f["text"].startswith("▶")]


async def test_local_model_calls_the_time_tool_and_draws(app_factory: AppFactory, tiny: TinyModels) -> None:
    app = await app_factory(real=("llm",), engines=image_engines(tiny), images=SMALL, agent={"max_steps": 3},
                            responder={"stream_interval_s": 0.05, "progress_interval_s": 0.0})
    async with Visitor(app.url) as v:
        mid = await v.send("/agent what time is it?")
        await wait(v, mid, lambda f: f.get("type") == "message" and "🕒" in f.get("text", ""), timeout=100)
        assert "current_time" in steps(v, mid)[0]
        final = await wait(v, mid, lambda f: f.get("type") == "message" and not f["text"].startswith(
            ("▶", "🕒", "Hi!")), timeout=100)
        print("local model, time: final message", repr(final["text"]))

        mid = await v.send("/agent 画一只猫")
        image = await wait(v, mid, is_image, timeout=100)
        assert "generate_image" in steps(v, mid)[0]
        print(f"local model drew: {image['caption']!r}")
        last = await wait(v, mid, lambda f: f.get("type") == "message" and not f["text"].startswith(("▶", "Queued")),
                          timeout=100)
        print("local model, cat: final message", repr(last["text"]))
