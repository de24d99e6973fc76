"""Discord scenarios: the real discord.py client in the service, against a loopback stand-in of
Discord's gateway and REST API that records what the bot sends."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from bot.app import RunningApp
from tests.conftest import AppFactory
from tests.support.discord_stub import DiscordStub, Upload, patch_discord
from tests.support.openai_stub import OpenAIStub, Reply
from tests.unit.test_filecheck import png_bytes

TOKEN = "discord-test-token"
OGG = b"OggS\x00\x02" + b"\x00" * 20 + b"\x01\x1eOpusHead" + b"\x00" * 64  # enough for the type check


@pytest_asyncio.fixture(loop_scope="session")
async def discord_stub() -> AsyncIterator[DiscordStub]:
    async with DiscordStub(token=TOKEN, heartbeat_interval_ms=200) as stub:
        yield stub


StartApp = Callable[..., Awaitable[RunningApp]]


@pytest_asyncio.fixture(loop_scope="session")
async def start_discord(app_factory: AppFactory, discord_stub: DiscordStub,
                        monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StartApp]:
    """Starts the service with Discord on the stand-in (the patch lasts as long as the apps)."""
    monkeypatch.setenv("DISCORD_BOT_TOKEN", TOKEN)
    started: list[RunningApp] = []
    with patch_discord(discord_stub):
        async def start(**overrides: Any) -> RunningApp:
            app = await app_factory(discord={"guild_ready_timeout_s": 0.05, **overrides},
                                    rate_limit={"per_user_per_minute": 600, "burst": 100},
                                    speech={"voice_mode": "off"})  # voice clips echo what arrived
            started.append(app)
            return app

        yield start
        for app in started:
            await app.stop(drain_timeout=5)


@pytest_asyncio.fixture(loop_scope="session")
async def discord_app(start_discord: StartApp) -> RunningApp:
    return await start_discord()


async def until(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def answer_texts(stub: DiscordStub, record: Any) -> list[str]:
    """The original response and the follow-ups of an interaction."""
    ids = [i for i in [record.original_message_id, *record.followup_ids] if i]
    return [message_text(stub.world.messages.get(i, {})) for i in ids]


def message_text(message: dict[str, Any]) -> str:
    """A message's content plus its embeds' titles and descriptions."""
    embeds = " ".join(f"{e.get('title', '')} {e.get('description', '')}" for e in message.get("embeds") or [])
    return f"{message.get('content') or ''} {embeds}".strip()


def texts(stub: DiscordStub, channel_id: int | None = None) -> list[str]:
    return [message_text(m) for m in stub.sent_messages(channel_id)]


async def test_dm_conversation_streams_by_edits(
    discord_app: RunningApp, discord_stub: DiscordStub, openai_stub: OpenAIStub
) -> None:
    openai_stub.script(Reply(text="Hi Alice! " * 40, chunk_delay_s=0.01))
    payload = await discord_stub.dm_message("hello bot")
    channel = int(payload["channel_id"])
    reply = await until(lambda: next((m for m in discord_stub.sent_messages(channel)
                                      if "Hi Alice! Hi Alice" in (m.get("content") or "")
                                      and m.get("components")), None))
    assert reply["content"].strip() == ("Hi Alice! " * 40).strip()
    assert discord_stub.edits(int(reply["id"]))  # streamed by edits
    # the first reply (here the greeting) points at the user's message
    assert discord_stub.sent_messages(channel)[0].get("message_reference", {}).get("message_id") == payload["id"]
    labels = [c.get("label") for row in reply["components"] for c in row["components"]]
    assert "👍" in labels


async def test_help_interaction_is_deferred_then_answered(
    discord_app: RunningApp, discord_stub: DiscordStub
) -> None:
    record = await discord_stub.slash_command("help")
    await until(lambda: any("/whoami" in t for t in answer_texts(discord_stub, record)))
    assert record.callbacks[0].type == 5  # deferred first
    embeds = [e for i in record.followup_ids for e in discord_stub.world.messages[i].get("embeds") or []]
    assert embeds and embeds[0]["title"] == "Commands"  # a rich result
    assert record.callback_latency_s is not None and record.callback_latency_s < 3


async def test_long_reply_arrives_as_three_messages_with_fences(
    discord_app: RunningApp, discord_stub: DiscordStub, openai_stub: OpenAIStub
) -> None:
    code = "```js\n" + "\n".join(f"console.log('step {i}');" for i in range(60)) + "\n```"
    intro = "Here is the plan. " * 30
    needed = 4500 - len(intro) - 2 * len(code) - 6
    answer = "\n\n".join([intro, code, ("And more. " * 500)[:needed], code])
    assert len(answer) == 4500
    openai_stub.script(Reply(text=answer))
    payload = await discord_stub.dm_message("write it all", author="bob")
    channel = int(payload["channel_id"])
    posts = await until(lambda: (lambda ms: ms if ms and any(m.get("components") for m in ms) else None)(
        [m for m in discord_stub.sent_messages(channel) if "plan" in (m.get("content") or "")
         or "console.log" in (m.get("content") or "") or "more." in (m.get("content") or "")]))
    assert len(posts) == 3
    for message in posts:
        assert len(message["content"]) <= 2000
        assert sum(1 for line in message["content"].split("\n") if line.startswith("```")) % 2 == 0


async def test_voice_message_reaches_the_voice_handler_with_its_bytes(
    discord_app: RunningApp, discord_stub: DiscordStub
) -> None:
    payload = await discord_stub.voice_message(OGG, dm=True)
    channel = int(payload["channel_id"])
    await until(lambda: any("voice-message.ogg" in t for t in texts(discord_stub, channel)))
    blob = await discord_app.services.store.blobs.by_sha(hashlib.sha256(OGG).hexdigest())
    assert blob is not None and blob.mime == "audio/ogg"


async def test_image_attachment_reaches_the_image_handler(
    discord_app: RunningApp, discord_stub: DiscordStub
) -> None:
    image = png_bytes()
    bot_id = discord_stub.bot.id
    await discord_stub.user_message(f"<@{bot_id}> look", attachments=[Upload("cat.png", image, "image/png")])
    await until(lambda: any("Saved cat.png" in t for t in texts(discord_stub)))
    assert await discord_app.services.store.blobs.by_sha(hashlib.sha256(image).hexdigest()) is not None


async def test_bot_resumes_after_a_dropped_websocket(discord_app: RunningApp, discord_stub: DiscordStub) -> None:
    resumes = discord_stub.gateway.resume_count
    await discord_stub.disconnect(code=None)
    await until(lambda: discord_stub.gateway.resume_count > resumes, timeout=20)
    payload = await discord_stub.dm_message("/whoami", author="alice")
    await until(lambda: any("You are" in t for t in texts(discord_stub, int(payload["channel_id"]))), timeout=20)


async def test_command_sync_happens_once_not_on_every_start(
    start_discord: StartApp, discord_stub: DiscordStub
) -> None:
    def syncs() -> int:
        return len(discord_stub.requests_to("PUT", r"/applications/\d+/(guilds/\d+/)?commands$"))

    first = await start_discord()
    assert syncs() == 1
    await first.stop()
    await start_discord()  # a restart with the same registry
    assert syncs() == 1
    put = discord_stub.requests_to("PUT", r"/applications/\d+/commands$")[0]
    assert "help" in {c["name"] for c in put.json}


async def test_commands_carry_types_choices_and_chinese(discord_app: RunningApp, discord_stub: DiscordStub) -> None:
    put = discord_stub.requests_to("PUT", r"/applications/\d+/commands")[-1]
    commands = {c["name"]: c for c in put.json}
    memory = commands["memory"]
    assert memory["description_localizations"]["zh-CN"].startswith("查看或切换")
    mode = memory["options"][0]
    assert mode["type"] == 3 and [c["value"] for c in mode["choices"]][:2] == ["show", "facts"]
    model = {o["name"]: o for o in commands["model"]["options"]}
    assert model["temperature"]["type"] == 10 and model["seed"]["type"] == 4 and model["json"]["type"] == 5


async def test_button_click_routes_to_the_handler(discord_app: RunningApp, discord_stub: DiscordStub) -> None:
    record = await discord_stub.slash_command("help")
    message_id = await until(lambda: record.original_message_id)
    await until(lambda: any(discord_stub.world.messages[i].get("components")
                            for i in [message_id, *record.followup_ids]))
    click = await discord_stub.click(message_id, "suggest|/ping")
    await until(lambda: any("Pong" in t for t in answer_texts(discord_stub, click)))


async def test_unknown_button_gets_a_clear_message(discord_app: RunningApp, discord_stub: DiscordStub) -> None:
    record = await discord_stub.slash_command("ping")
    message_id = await until(lambda: record.original_message_id)
    click = await discord_stub.click(message_id, "vanished-feature|42")
    await until(lambda: any("no longer works" in t for t in answer_texts(discord_stub, click)))


async def test_missing_permissions_are_explained_in_a_dm(discord_app: RunningApp, discord_stub: DiscordStub) -> None:
    channel = discord_stub.channel_id
    discord_stub.fail_next("POST", rf"/channels/{channel}/messages$", status=403, times=5)
    alice = discord_stub.user("alice")
    await discord_stub.user_message(f"<@{discord_stub.bot.id}> /whoami", channel_id=channel, author=alice.id)
    dm = int(discord_stub.world.dm_channel(alice.id)["id"])
    await until(lambda: any("missing permissions" in t for t in texts(discord_stub, dm)))


async def test_rate_limits_are_respected(discord_app: RunningApp, discord_stub: DiscordStub) -> None:
    discord_stub.fail_next("POST", r"/channels/\d+/messages$", status=429, retry_after=0.3)
    payload = await discord_stub.dm_message("/whoami", author="bob")
    await until(lambda: any("You are" in t for t in texts(discord_stub, int(payload["channel_id"]))))
    limited = [r for r in discord_stub.requests_to("POST", r"/channels/\d+/messages$") if r.status == 429]
    assert limited


async def test_without_the_content_intent_the_bot_falls_back_to_mentions(
    app_factory: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DISCORD_BOT_TOKEN", TOKEN)
    async with DiscordStub(token=TOKEN, heartbeat_interval_ms=200, privileged_intents=0) as stub:
        with patch_discord(stub):
            app = await app_factory(discord={"guild_ready_timeout_s": 0.05})
            try:
                assert "Message Content" in caplog.text or "message content" in caplog.text
                await stub.user_message(f"<@{stub.bot.id}> /whoami")
                await until(lambda: any("You are" in t for t in texts(stub)))
            finally:
                await app.stop()


async def test_threads_the_bot_talks_in_are_followed(discord_app: RunningApp, discord_stub: DiscordStub) -> None:
    thread = discord_stub.thread_id
    bot_id = discord_stub.bot.id
    await discord_stub.user_message(f"<@{bot_id}> first question", channel_id=thread)
    await until(lambda: any("echo: first question" in t for t in texts(discord_stub, thread)))
    await discord_stub.user_message("second question", channel_id=thread)  # no mention: still ours
    await until(lambda: any("echo: second question" in t for t in texts(discord_stub, thread)))
