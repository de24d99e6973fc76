"""/present end to end on the web page, Slack and Discord: the OpenAI stand-in writes the answer, the
bundled speech engine speaks it and the local renderer makes the video; each platform gets a playable MP4."""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import tempfile
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from engines.audio import ffmpeg_exe
from tests.conftest import AppFactory
from tests.integration.conftest import SECRET
from tests.integration.test_slack import post
from tests.support.discord_stub import DiscordStub, patch_discord
from tests.support.openai_stub import OpenAIStub, Reply
from tests.support.slack_stub import SlackStub, form_body
from tests.support.web_client import Visitor

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

ANSWER = "Refunds are paid to the original card within thirty days."
SMALL = {"size": 192, "fps": 12}


def playable(data: bytes) -> tuple[float, str]:
    """(duration in seconds, ffmpeg's stream lines) of an MP4, decoding it fully (fails on a broken file)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.mp4"
        path.write_bytes(data)
        done = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "null", "-"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and not done.stderr.strip(), done.stderr
        info = subprocess.run([ffmpeg_exe(), "-i", str(path)], capture_output=True, text=True, timeout=30).stderr
    match = re.search(r"Duration: (\d+):(\d+):([\d.]+)", info)
    assert match, info
    hours, minutes, seconds = match.groups()
    streams = "\n".join(line for line in info.splitlines() if "Stream #" in line)
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds), streams


def check(data: bytes) -> None:
    duration, streams = playable(data)
    assert 1.0 < duration < 30.0
    assert "Video: h264" in streams or "Video: mpeg4" in streams
    assert "Audio: aac" in streams


async def test_web_present_posts_a_playable_mp4(app_factory: AppFactory, openai_stub: OpenAIStub) -> None:
    openai_stub.script(Reply(text=ANSWER))
    app = await app_factory(presenter=SMALL, access={"admins": ["web:boss"]})
    async with Visitor(app.url, visitor="boss") as v:
        mid = await v.send("/present What is our refund policy?")
        try:
            frame = await v.wait_for(lambda f: f.get("reply_to") == mid and f.get("type") == "file", timeout=100)
        except TimeoutError:
            raise AssertionError(f"no video; got {v.replies(mid)}") from None
        assert frame["mime"] == "video/mp4" and ANSWER in frame.get("caption", frame.get("text", ""))
        async with aiohttp.ClientSession() as http, http.get(app.url + frame["url"]) as resp:
            assert resp.status == 200
            check(await resp.read())
        # A portrait with no face is refused with a clear message, and the default stays.
        wall = io.BytesIO()
        Image.new("RGB", (480, 480), (128, 128, 128)).save(wall, format="PNG")
        status, body = await v.upload("wall.png", wall.getvalue())
        assert status == 200
        mid = await v.send("/presenter portrait", attachments=[str(body["id"])])
        try:
            refused = await v.wait_for(lambda f: f.get("reply_to") == mid and "face" in f.get("text", ""), timeout=60)
        except TimeoutError:
            raise AssertionError(f"no refusal; got {v.replies(mid)}") from None
        assert "couldn't find a face" in refused["text"]
        assert not (await app.services.store.scoped.get("workspace", 1)).get("presenter_portrait")


async def test_slack_present_uploads_an_mp4(app_factory: AppFactory, openai_stub: OpenAIStub,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    openai_stub.script(Reply(text=ANSWER))
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-present")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    async with SlackStub() as stub:
        app = await app_factory(slack={"api_url": stub.url, "min_post_interval_s": 0.0}, presenter=SMALL)
        status, _ = await post(app, form_body(stub.slash_command("/present", "What is our refund policy?")),
                               content_type="application/x-www-form-urlencoded")
        assert status == 200
        await stub.wait_for_call("files.completeUploadExternal", timeout=180)
        [video] = [f for f in stub.files.values() if f.name == "presenter.mp4"]
        assert video.channel_id == "C1"
        check(video.content)
        await app.stop()


async def test_discord_present_attaches_an_mp4(app_factory: AppFactory, openai_stub: OpenAIStub,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    openai_stub.script(Reply(text=ANSWER))
    monkeypatch.setenv("DISCORD_BOT_TOKEN", "discord-present")
    async with DiscordStub(token="discord-present", heartbeat_interval_ms=500) as stub:
        with patch_discord(stub):
            app = await app_factory(discord={"guild_ready_timeout_s": 0.05}, presenter=SMALL)
            try:
                record = await stub.slash_command("present", {"text": "What is our refund policy?"})
                deadline = asyncio.get_running_loop().time() + 180
                found: bytes | None = None
                while found is None:
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.2)
                    for mid in [record.original_message_id, *record.followup_ids]:
                        for attachment in stub.world.messages.get(mid, {}).get("attachments") or []:
                            if attachment.get("filename") == "presenter.mp4":
                                found = stub.world.files[int(attachment["id"])][1]
                assert found is not None
                check(found)
            finally:
                await app.stop()


async def test_video_answers_in_chat_and_long_texts_are_cut(app_factory: AppFactory, openai_stub: OpenAIStub) -> None:
    openai_stub.responder = lambda body: Reply(text=ANSWER)
    app = await app_factory(presenter={**SMALL, "max_chars": 60})
    async with Visitor(app.url) as v:
        mid = await v.send("/presenter video on")
        await v.wait_for(lambda f: f.get("reply_to") == mid and "come with a video: yes" in f.get("text", ""))
        mid = await v.send("what is our refund policy?")
        video = await v.wait_for(lambda f: f.get("reply_to") == mid and f.get("type") == "file", timeout=120)
        assert video["mime"] == "video/mp4"
        assert any(ANSWER in f.get("text", "") for f in v.frames if f.get("type") in ("message", "edit"))

        long_text = "This sentence is much longer than a short video should ever be read out loud by anyone."
        mid = await v.send(f"/present {long_text} as_is:yes")
        await v.wait_for(lambda f: f.get("reply_to") == mid and "first 60 characters" in f.get("text", ""))
        cut = await v.wait_for(lambda f: f.get("reply_to") == mid and f.get("type") == "file", timeout=120)
        assert cut["caption"].startswith("This sentence is much longer") and "out loud" not in cut["caption"]
