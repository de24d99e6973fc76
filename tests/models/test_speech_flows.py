"""Voice clips from the web page, Slack and Discord get their transcript; /speak answers with audio.
Real Whisper and Piper; the platforms are the loopback stand-ins."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from engines.base import EngineRequest
from engines.tts import LocalSpeechEngine, SpeakRequest
from tests.conftest import AppFactory
from tests.support.discord_stub import DiscordStub, patch_discord
from tests.support.openai_stub import OpenAIStub, Reply
from tests.support.slack_stub import SlackStub, app_mention, event_callback, sign
from tests.support.web_client import Visitor

pytestmark = pytest.mark.slow
SENTENCE = "The quarterly report is ready for review."
SECRET = "speech-signing-secret"


@pytest.fixture(scope="module")
def clips() -> dict[str, bytes]:
    engine = LocalSpeechEngine()
    engine.load()
    try:
        made = {}
        for fmt in ("ogg", "mp3", "m4a"):
            [speech] = engine.run([EngineRequest(SpeakRequest(SENTENCE, format=fmt))])  # type: ignore[list-item]
            made[fmt] = speech.audio
        return made
    finally:
        engine.unload()


def heard(text: str) -> bool:
    lowered = text.lower()
    return "quarterly report" in lowered and "review" in lowered


async def test_web_voice_clip_gets_its_transcript(app_factory: AppFactory, clips: dict[str, bytes]) -> None:
    app = await app_factory()
    async with Visitor(app.url) as v:
        status, body = await v.upload("note.m4a", clips["m4a"])
        assert status == 200, body
        await v.send("", attachments=[body["id"]])
        frame = await v.wait_for(lambda f: heard(f.get("text", "")), timeout=120)
        assert frame["text"].startswith("🎙️")
        mid = await v.send("/speak Good morning, team.")
        audio = await v.wait_for(lambda f: f.get("type") == "file" and f.get("reply_to") == mid, timeout=120)
        assert audio["mime"] == "audio/mpeg"


async def test_audio_minutes_quota_counts_transcribed_time(app_factory: AppFactory, clips: dict[str, bytes]) -> None:
    app = await app_factory(quota={"roles": {"user": {"audio_minutes": 0.01}}})  # under one clip
    async with Visitor(app.url) as v:
        status, body = await v.upload("note.m4a", clips["m4a"])
        assert status == 200, body
        await v.send("", attachments=[body["id"]])
        await v.wait_for(lambda f: heard(f.get("text", "")), timeout=120)
        mid = await v.send("", attachments=[body["id"]])
        refused = await v.wait_for(lambda f: f.get("reply_to") == mid and "audio minutes" in f.get("text", ""),
                                   timeout=60)
        assert "used today's audio minutes" in refused["text"]
        mid = await v.send("/quota")
        shown = await v.wait_for(lambda f: f.get("reply_to") == mid and "audio minutes:" in f.get("text", ""))
        assert "0 left" in shown["text"]


async def test_slack_voice_clip_gets_its_transcript(
    app_factory: AppFactory, clips: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-speech")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    async with SlackStub() as stub:
        app = await app_factory(slack={"api_url": stub.url, "min_post_interval_s": 0.0})
        file = stub.add_file("audio_message.mp3", clips["mp3"], "audio/mpeg")
        body = json.dumps(event_callback(app_mention("<@UBOT>", channel="C1", files=[file]))).encode()
        async with aiohttp.ClientSession() as http, http.post(
            f"{app.url}/slack/events", data=body, headers={"Content-Type": "application/json", **sign(body, SECRET)}
        ) as resp:
            assert resp.status == 200
        reply = await stub.wait_for_message("C1", where=lambda m: heard(m.get("text", "")), timeout=120)
        assert reply["thread_ts"]
        await app.stop()


async def test_discord_voice_message_gets_its_transcript(
    app_factory: AppFactory, clips: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISCORD_BOT_TOKEN", "discord-speech")
    async with DiscordStub(token="discord-speech", heartbeat_interval_ms=500) as stub:
        with patch_discord(stub):
            app = await app_factory(discord={"guild_ready_timeout_s": 0.05})
            try:
                payload = await stub.voice_message(clips["ogg"], dm=True)
                channel = int(payload["channel_id"])
                deadline = asyncio.get_running_loop().time() + 120
                while not any(heard(m.get("content") or "") for m in stub.sent_messages(channel)):
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.2)
            finally:
                await app.stop()



MEETING = [
    "Good morning everyone, this is the weekly planning meeting for the payments team.",
    "Lin will finish the refund service by Friday and send the release notes to the team.",
    "Omar reported that the checkout error rate dropped to one percent after the last fix.",
    "We agreed to move the database migration to next Tuesday evening.",
    "Sara will write the test plan for the new invoice page before the next meeting.",
    "The budget for cloud costs this quarter is twelve thousand dollars.",
]


async def test_summarize_audio_on_a_three_minute_recording(
    app_factory: AppFactory, openai_stub: OpenAIStub
) -> None:
    engine = LocalSpeechEngine()
    engine.load()
    try:
        text = " ".join(MEETING * 8)
        [speech] = engine.run([EngineRequest(SpeakRequest(text, format="mp3"))])  # type: ignore[list-item]
    finally:
        engine.unload()
    assert speech.duration_s >= 170  # about three minutes
    openai_stub.script(Reply(text="Part summary."), Reply(text="Part summary."),
                       Reply(text="The payments team planned the week.\nAction items:\n- Lin: refund service"))
    app = await app_factory(speech={"summary_chunk_chars": 1500}, limits={"max_upload_mb": 10},
                            responder={"stream_interval_s": 0.05, "progress_interval_s": 0.0})
    async with Visitor(app.url) as v:
        status, body = await v.upload("meeting.mp3", speech.audio)
        assert status == 200, body
        mid = await v.send("/summarize-audio", attachments=[body["id"]])
        summary = await v.wait_for(lambda f: "Action items" in f.get("text", ""), timeout=240)
        assert "3." in summary["text"] or "2." in summary["text"]  # the minutes
        transcript = next(f for f in v.replies(mid) if f["type"] == "file")
        assert transcript["name"] == "transcript.txt"
        progress = [f for f in v.replies(mid) if f["type"] == "progress"]
        assert len(progress) >= 3
    calls = openai_stub.chat_requests()
    mapped = [c for c in calls if c["messages"][0]["content"].startswith("Summarize this part")]
    assert len(mapped) >= 2  # map-reduce over chunks
    transcript_text = " ".join(c["messages"][1]["content"] for c in mapped).lower()
    assert "refund" in transcript_text and "payments" in transcript_text


async def test_converse_mode_answers_a_voice_clip_as_if_typed(
    app_factory: AppFactory, clips: dict[str, bytes], openai_stub: OpenAIStub
) -> None:
    app = await app_factory()
    async with Visitor(app.url) as v:
        mid = await v.send("/voice converse")
        await v.reply(mid, contains="converse")
        status, body = await v.upload("note.ogg", clips["ogg"])
        assert status == 200, body
        await v.send("", attachments=[body["id"]])
        await v.wait_for(lambda f: heard(f.get("text", "")) and f.get("text", "").startswith("echo:"), timeout=120)
