"""Chat with memory through the web adapter, with the OpenAI stand-in as the language model."""

from __future__ import annotations

import json
from typing import Any

import pytest

from handlers.memory import CONDENSE_PROMPT, ENTITY_PROMPT, SUMMARY_PROMPT
from tests.conftest import AppFactory
from tests.support.openai_stub import OpenAIStub, Reply, message_text
from tests.support.web_client import Visitor

TOPICS = ["the weather", "a recipe", "chess openings", "the moon", "jazz", "bicycles", "tea", "rivers",
          "volcanoes", "origami", "trains", "owls"]


def scripted_model(body: dict[str, Any]) -> Reply:
    """Answers like a model would: summaries for summary prompts, facts for entity prompts."""
    system = message_text(body["messages"][0]["content"])
    last = message_text(body["messages"][-1]["content"])
    if system == SUMMARY_PROMPT:
        return Reply(text=f"SUMMARY covering {last.count('User:')} more exchange(s)")
    if system == CONDENSE_PROMPT:
        return Reply(text=f"CONDENSED {last.count('SUMMARY') + last.count('CONDENSED')} notes")
    if system == ENTITY_PROMPT:
        if "Lin" in last:
            return Reply(text=json.dumps({"facts": [{"entity": "Lin", "fact": "works on the payments team"}]}))
        return Reply(text='{"facts": []}')
    return Reply(text=f"answer about {last}")


FAST = {"per_user_per_minute": 6000, "burst": 100}  # scripted conversations type faster than people


def main_requests(stub: OpenAIStub) -> list[dict[str, Any]]:
    """Chat requests that answered the user (not the memory's own summary or extraction calls)."""
    return [b for b in stub.chat_requests()
            if message_text(b["messages"][0]["content"]) not in (SUMMARY_PROMPT, ENTITY_PROMPT, CONDENSE_PROMPT)]


async def converse(v: Visitor, texts: list[str]) -> None:
    for text in texts:
        mid = await v.send(text)
        await v.wait_for(lambda f, t=text: f.get("type") in ("message", "edit")
                         and f.get("text", "").startswith(f"answer about {t}") and bool(f.get("buttons")))
        del mid


async def twelve_turns(v: Visitor, strategy: str) -> None:
    mid = await v.send(f"/memory {strategy}")
    await v.reply(mid, contains="now uses")
    await converse(v, [f"tell me about {topic}" for topic in TOPICS])


def contents(body: dict[str, Any]) -> list[str]:
    return [message_text(m["content"]) for m in body["messages"]]


async def test_buffer_window_sends_the_last_turns(app_factory: AppFactory, openai_stub: OpenAIStub) -> None:
    openai_stub.responder = scripted_model
    app = await app_factory(rate_limit=FAST, chat={"window_turns": 3})
    async with Visitor(app.url) as v:
        await twelve_turns(v, "buffer_window")
    last = main_requests(openai_stub)[-1]
    assert contents(last)[1:] == [  # the 3 turns before, then the new message
        "tell me about volcanoes", "answer about tell me about volcanoes",
        "tell me about origami", "answer about tell me about origami",
        "tell me about trains", "answer about tell me about trains",
        "tell me about owls",
    ]
    assert last["messages"][0]["role"] == "system"


async def test_summary_sends_a_running_summary(app_factory: AppFactory, openai_stub: OpenAIStub) -> None:
    openai_stub.responder = scripted_model
    app = await app_factory(rate_limit=FAST)
    async with Visitor(app.url) as v:
        await twelve_turns(v, "summary")
    last = main_requests(openai_stub)[-1]
    # one note per earlier turn, appended: 11 turns, well under summary_tokens
    notes = "\n".join(["SUMMARY covering 1 more exchange(s)"] * 11)
    assert contents(last)[1:] == [f"Summary of the conversation so far:\n{notes}", "tell me about owls"]
    summaries = [b for b in openai_stub.chat_requests() if message_text(b["messages"][0]["content"]) == SUMMARY_PROMPT]
    assert len(summaries) >= 11  # one after each turn (the last may still be running)
    assert message_text(summaries[10]["messages"][1]["content"]).startswith("User: tell me about trains")


async def test_long_summaries_are_condensed(app_factory: AppFactory, openai_stub: OpenAIStub) -> None:
    openai_stub.responder = scripted_model
    app = await app_factory(rate_limit=FAST, chat={"summary_tokens": 20})
    async with Visitor(app.url) as v:
        await twelve_turns(v, "summary")
    summary = contents(main_requests(openai_stub)[-1])[1]
    assert summary.startswith("Summary of the conversation so far:\nCONDENSED")
    assert len(summary.split("\n")) <= 3  # condensed, not 11 notes


async def test_summary_buffer_keeps_recent_turns_under_budget(app_factory: AppFactory, openai_stub: OpenAIStub) -> None:
    openai_stub.responder = scripted_model
    # the stand-in's tokenizer counts words: each exchange is about 8 tokens
    app = await app_factory(rate_limit=FAST, chat={"buffer_tokens": 20})
    async with Visitor(app.url) as v:
        await twelve_turns(v, "summary_buffer")
    last = contents(main_requests(openai_stub)[-1])
    assert last[1].startswith("Summary of the conversation so far:\nSUMMARY")
    recent = last[2:-1]
    assert 2 <= len(recent) <= 6 and recent[-1] == "answer about tell me about trains"
    assert "tell me about the weather" not in last  # folded into the summary
    assert last[-1] == "tell me about owls"


async def test_entity_memory_recalls_facts_and_survives_restart(
    app_factory: AppFactory, openai_stub: OpenAIStub
) -> None:
    openai_stub.responder = scripted_model
    app = await app_factory(rate_limit=FAST)
    visitor = "entity-visitor"
    async with Visitor(app.url, visitor=visitor) as v:
        mid = await v.send("/memory entity")
        await v.reply(mid, contains="now uses")
        await converse(v, ["Lin is my name and I work on payments", *[f"tell me about {t}" for t in TOPICS[:11]]])
        mid = await v.send("/memory facts")
        listing = await v.reply(mid, contains="Lin")
        assert "payments team" in listing["text"]
    await app.stop()

    app = await app_factory(rate_limit=FAST, chat={"window_turns": 2})  # a restart on the same database
    async with Visitor(app.url, visitor=visitor) as v:
        await converse(v, ["what does Lin work on?"])
        last = contents(main_requests(openai_stub)[-1])
        assert last[1:] == ["What you know about things mentioned:\n- Lin: works on the payments team",
                            "tell me about origami", "answer about tell me about origami",
                            "tell me about trains", "answer about tell me about trains",
                            "what does Lin work on?"]
        mid = await v.send("/forget Lin")
        await v.reply(mid, contains="Forgot 1")
        mid = await v.send("/memory facts")
        await v.reply(mid, contains="don't know any facts")


async def test_summary_survives_restart(app_factory: AppFactory, openai_stub: OpenAIStub) -> None:
    openai_stub.responder = scripted_model
    app = await app_factory(rate_limit=FAST)
    async with Visitor(app.url, visitor="summary-visitor") as v:
        mid = await v.send("/memory summary")
        await v.reply(mid, contains="now uses")
        await converse(v, ["tell me about tea", "tell me about jazz"])
    await app.stop()
    app = await app_factory(rate_limit=FAST)
    async with Visitor(app.url, visitor="summary-visitor") as v:
        mid = await v.send("/memory")
        shown = await v.reply(mid, contains="Summary so far")
        assert "SUMMARY covering" in shown["text"] and "4 messages" in shown["text"]
        await converse(v, ["and rivers?"])
    assert contents(main_requests(openai_stub)[-1])[1].startswith("Summary of the conversation so far:\nSUMMARY")


async def test_banned_words_reach_the_api_as_logit_bias(app_factory: AppFactory, openai_stub: OpenAIStub) -> None:
    app = await app_factory(rate_limit=FAST)
    async with Visitor(app.url) as v:
        mid = await v.send("/ban-words lunch, Coffee")
        await v.reply(mid, contains="lunch")
        mid = await v.send("what should I have?")
        await v.wait_for(lambda f: "echo: what should I have?" in f.get("text", ""))
    body = main_requests(openai_stub)[-1]
    expected = set()
    for word in ("lunch", "Coffee"):
        for variant in (word, f" {word}", word.capitalize(), f" {word.capitalize()}"):
            expected |= {str(t) for t in openai_stub.tokenizer.encode(variant)}
    assert set(body["logit_bias"]) == expected and set(body["logit_bias"].values()) == {-100}


async def test_channel_controls_reach_the_request(app_factory: AppFactory, openai_stub: OpenAIStub) -> None:
    app = await app_factory(rate_limit=FAST)
    async with Visitor(app.url) as v:
        for command in ("/persona You are a pirate.", "/model temperature:0.2 seed:7 max_tokens:64 json:yes"):
            mid = await v.send(command)
            await v.wait_for(lambda f, m=mid: f.get("reply_to") == m)
        mid = await v.send("hello")
        await v.wait_for(lambda f: "echo: hello" in f.get("text", ""))
    body = main_requests(openai_stub)[-1]
    assert body["messages"][0] == {"role": "system", "content": "You are a pirate."}
    assert (body["temperature"], body["seed"], body["max_tokens"]) == (0.2, 7, 64)
    assert body["response_format"] == {"type": "json_object"}


async def test_cheap_model_routing(app_factory: AppFactory, openai_stub: OpenAIStub) -> None:
    app = await app_factory(rate_limit=FAST, chat={"cheap_model": "tiny-model", "cheap_max_chars": 20})
    async with Visitor(app.url) as v:
        await v.send("hi")
        await v.wait_for(lambda f: "echo: hi" in f.get("text", ""))
        long = "please explain in detail how transformers use attention"
        await v.send(long)
        await v.wait_for(lambda f: f"echo: {long}" in f.get("text", ""))
    models = [b["model"] for b in main_requests(openai_stub)]
    assert models == ["tiny-model", "gpt-4o-mini"]


async def test_budget_warns_then_stops_without_calling_the_model(
    app_factory: AppFactory, openai_stub: OpenAIStub
) -> None:
    # 1,000,000 tokens cost $1 each way; each answer here is ~10 tokens, so the budget is tiny.
    app = await app_factory(rate_limit=FAST, chat={"prices": {"gpt-4o-mini": {"input": 1000.0, "output": 1000.0}},
                                  "budget_user_usd": 0.06, "budget_warn_fraction": 0.3})
    async with Visitor(app.url) as v:
        for text in [f"question number {n} here" for n in range(8)]:
            mid = await v.send(text)
            frame = await v.wait_for(lambda f, m=mid: f.get("reply_to") == m and (
                f["type"] == "error" or "echo:" in f.get("text", "")))
            if frame["type"] == "error":
                break
        assert frame["type"] == "error" and "budget" in frame["text"] and "used up" in frame["text"]
        calls = len(openai_stub.chat_requests())
        mid = await v.send("one more")
        await v.reply(mid, kind="error", contains="used up")
        assert len(openai_stub.chat_requests()) == calls  # the model was not called
        assert any("Heads-up" in f.get("text", "") for f in v.frames), [f.get("text") for f in v.frames]
        mid = await v.send("/usage")
        table = await v.reply(mid, contains="Usage in this workspace")
        assert "30 days" in table["text"]
        chart = await v.reply(mid, kind="file")
        assert chart["mime"] == "image/png"


async def test_provider_429_is_retried_then_reported(app_factory: AppFactory, openai_stub: OpenAIStub) -> None:
    app = await app_factory(rate_limit=FAST)
    openai_stub.script(*[Reply(status=429, retry_after=0.05)] * 3)
    async with Visitor(app.url) as v:
        mid = await v.send("are you there?")
        error = await v.reply(mid, kind="error", timeout=30)
        assert "rate limiting" in error["text"]
        assert len(openai_stub.chat_requests()) == 3  # first try and two retries
        openai_stub.script(Reply(status=503), Reply(text="back again"))
        mid = await v.send("now?")
        await v.wait_for(lambda f: "back again" in f.get("text", ""), timeout=30)
        # the user's messages were kept even when the model failed
        conversation = await app.services.store.conversations.current(
            await app.services.store.identity.ensure("web", "web", f"dm-{v.visitor}", v.visitor), f"dm:{v.visitor}")
        texts = [m.content for m in await app.services.store.messages.recent(conversation, 10)]
        assert texts == ["are you there?", "now?", "back again"]


async def test_model_server_down_or_slow(app_factory: AppFactory, openai_stub: OpenAIStub) -> None:
    app = await app_factory(rate_limit=FAST)
    async with Visitor(app.url) as v:
        openai_stub.script(*[Reply(text="late", delay_s=15)] * 3)  # the engine's timeout is 10 s
        mid = await v.send("slow one")
        error = await v.reply(mid, kind="error", timeout=60)
        assert "took too long" in error["text"]
        await openai_stub.stop()
        mid = await v.send("anyone?")
        error = await v.reply(mid, kind="error", timeout=60)
        assert "can't reach" in error["text"]
        mid = await v.send("/ping")  # the pool keeps serving
        await v.reply(mid, contains="Pong")


async def test_empty_and_huge_messages(app_factory: AppFactory, openai_stub: OpenAIStub) -> None:
    app = await app_factory(rate_limit=FAST)
    async with Visitor(app.url) as v:
        mid = await v.send("   ")
        assert "empty" in (await v.reply(mid, kind="error"))["text"]
        mid = await v.send("abcd " * 19_999 + "abcde")
        notice = await v.reply(mid, contains="I read the first")
        assert "100000 characters" in notice["text"]
        await v.wait_for(lambda f: "echo: abcd" in f.get("text", ""))
    sent = message_text(main_requests(openai_stub)[-1]["messages"][-1]["content"])
    assert len(sent) <= 12_000


async def test_feedback_export_and_finetune(
    app_factory: AppFactory, openai_stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-finetune")
    app = await app_factory(rate_limit=FAST, access={"admins": ["web:ft-admin"]}, chat={"finetune_poll_s": 0.05})
    async with Visitor(app.url, visitor="ft-admin") as v:
        mid = await v.send("/feedback export")
        assert "nothing to export" in (await v.reply(mid, kind="error"))["text"]
        for text in ("good question", "bad question"):
            await v.send(text)
            await v.wait_for(lambda f, t=text: f"echo: {t}" in f.get("text", "") and bool(f.get("buttons")))
        answers = [f for f in v.frames if f.get("buttons") and "echo:" in f.get("text", "")]
        up = next(b for b in answers[0]["buttons"] if b["label"] == "👍")
        down = next(b for b in answers[1]["buttons"] if b["label"] == "👎")
        await v.reply(await v.click(up["action_id"], up["value"]), contains="good answer")
        await v.reply(await v.click(down["action_id"], down["value"]), contains="noted")
        rated = await app.services.store.messages.rated(1)
        assert [m.content for m in rated] == ["echo: good question"]

        mid = await v.send("/feedback export")
        exported = await v.reply(mid, kind="file")
        assert exported["name"] == "finetune.jsonl"
        blob = await app.services.store.blobs.by_sha(exported["url"].split("/")[2])
        assert blob is not None
        lines = [json.loads(line) for line in (await app.services.store.blobs.read(blob.id)).decode().splitlines()]
        assert len(lines) == 1
        assert [m["role"] for m in lines[0]["messages"]] == ["system", "user", "assistant"]
        assert lines[0]["messages"][1:] == [{"role": "user", "content": "good question"},
                                            {"role": "assistant", "content": "echo: good question"}]

        mid = await v.send("/finetune start")
        started = await v.reply(mid, contains="started")
        done = await v.reply(mid, contains="succeeded", timeout=30)
        assert "ft:" in done["text"]
        assert any(f["type"] == "progress" for f in v.replies(mid))
        job_id = started["text"].split()[2]
        assert job_id in openai_stub.fine_tuning.jobs
        uploaded = [r for r in openai_stub.requests if r.path == "/v1/files" and r.method == "POST"]
        assert len(uploaded) == 1
        mid = await v.send(f"/finetune status job:{job_id}")
        await v.reply(mid, contains="succeeded")


async def test_finetune_is_for_admins(app_factory: AppFactory) -> None:
    app = await app_factory(rate_limit=FAST)
    async with Visitor(app.url) as v:
        mid = await v.send("/finetune start")
        assert "don't have access" in (await v.reply(mid, kind="error"))["text"]


async def test_forged_feedback_for_another_workspace_is_refused(app_factory: AppFactory) -> None:
    app = await app_factory(rate_limit=FAST)
    store = app.services.store
    other = await store.identity.ensure("slack", "T-other", "C1", "U1")
    conversation = await store.conversations.current(other, "C1:U1")
    foreign = await store.messages.add(conversation, "assistant", "not yours")
    async with Visitor(app.url) as v:
        mid = await v.click("feedback", f"up:{foreign}")
        assert "no longer works" in (await v.reply(mid, kind="error"))["text"]
    assert (await store.messages.get(foreign)).meta is None  # type: ignore[union-attr]


async def test_workspace_defaults_need_an_admin_and_engines_switch_per_channel(
    app_factory: AppFactory, openai_stub: OpenAIStub
) -> None:
    app = await app_factory(rate_limit=FAST, access={"admins": ["web:boss"]})
    async with Visitor(app.url, visitor="worker") as v:
        mid = await v.send("/persona Be brief. workspace:yes")
        assert "don't have access" in (await v.reply(mid, kind="error"))["text"]
        mid = await v.send("/model engine:nonexistent")
        assert "no engine nonexistent" in (await v.reply(mid, kind="error"))["text"]
    async with Visitor(app.url, visitor="boss") as v:
        mid = await v.send("/persona You speak like a butler. workspace:yes")
        await v.reply(mid, contains="butler")
    async with Visitor(app.url, visitor="worker") as v:  # another channel of the same workspace
        await v.send("good evening")
        await v.wait_for(lambda f: "echo: good evening" in f.get("text", ""))
    assert main_requests(openai_stub)[-1]["messages"][0]["content"] == "You speak like a butler."
