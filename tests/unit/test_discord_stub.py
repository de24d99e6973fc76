"""The Discord stand-in speaks the gateway and REST API well enough for the real discord.py client."""

from __future__ import annotations

import asyncio
import io
import math
import time
from collections.abc import AsyncIterator

import discord
import pytest
import pytest_asyncio
from discord import app_commands
from discord.ext import commands

from tests.support.discord_stub import (
    DiscordStub,
    GuildSpec,
    Intent,
    MsgFlag,
    Perm,
    Upload,
    running_client,
)

TOKEN = "test-token"
MESSAGES_PATH = r"^/channels/\d+/messages$"


@pytest_asyncio.fixture(loop_scope="session")
async def stub() -> AsyncIterator[DiscordStub]:
    async with DiscordStub(heartbeat_interval_ms=100, token=TOKEN) as server:
        yield server


def intents() -> discord.Intents:
    chosen = discord.Intents.default()
    chosen.message_content = True
    return chosen


def make_client() -> discord.Client:
    return discord.Client(intents=intents(), guild_ready_timeout=0.05)


class Inbox:
    """Collects on_message events of a client."""

    def __init__(self, client: discord.Client) -> None:
        self.queue: asyncio.Queue[discord.Message] = asyncio.Queue()

        @client.event
        async def on_message(message: discord.Message) -> None:
            self.queue.put_nowait(message)

    async def next(self, *, from_bot: bool = False, timeout: float = 5.0) -> discord.Message:
        """The next message (by default skipping the bot's own, which Discord echoes back)."""
        while True:
            message = await asyncio.wait_for(self.queue.get(), timeout)
            if from_bot or not message.author.bot:
                return message


async def test_login_identify_and_ready_populate_the_cache(stub: DiscordStub) -> None:
    client = make_client()
    ready = asyncio.Event()

    @client.event
    async def on_ready() -> None:
        ready.set()

    async with running_client(stub, client, TOKEN):
        await asyncio.wait_for(ready.wait(), 2)
        assert client.user is not None and client.user.id == stub.bot.id and client.user.bot
        assert client.application_id == stub.application_id
        guild = client.get_guild(stub.guild.id)
        assert guild is not None and guild.name == "Test Guild"
        channel = guild.get_channel(stub.channel_id)
        assert isinstance(channel, discord.TextChannel) and channel.name == "general"
        thread = guild.get_thread(stub.thread_id)
        assert isinstance(thread, discord.Thread) and thread.parent_id == stub.channel_id
        assert guild.me is not None and guild.me.guild_permissions.send_messages
        assert guild.member_count == 3  # without the members intent discord.py caches only itself

    gateway = stub.gateway
    assert gateway.identify_count == 1 and gateway.resume_count == 0
    identified = gateway.identifies[0]
    assert identified.token_present and identified.payload["token"] == "<redacted>"
    assert identified.intents & Intent.MESSAGE_CONTENT and identified.intents & Intent.GUILD_MESSAGES
    first = gateway.connections[0]
    assert first.query == {"v": "10", "encoding": "json", "compress": "zlib-stream"} and first.compressed
    paths = [(r.method, r.path) for r in stub.requests]
    assert ("GET", "/users/@me") in paths and ("GET", "/oauth2/applications/@me") in paths
    assert stub.requests[0].headers["authorization"] == "Bot <redacted>"
    assert all(TOKEN not in str(r.headers) for r in stub.requests)


async def test_guild_thread_reply_and_voice_messages_reach_on_message(stub: DiscordStub) -> None:
    client = make_client()
    inbox = Inbox(client)
    async with running_client(stub, client, TOKEN):
        await stub.user_message("look at this", attachments=[Upload("notes.txt", b"hello world")])
        message = await inbox.next()
        assert message.content == "look at this" and message.author.name == "alice"
        assert isinstance(message.channel, discord.TextChannel) and message.guild is not None
        assert isinstance(message.author, discord.Member)
        [attachment] = message.attachments
        assert (attachment.filename, attachment.size, attachment.content_type) == ("notes.txt", 11, "text/plain")
        assert attachment.url.startswith(stub.url) and await attachment.read() == b"hello world"

        await stub.user_message("in the thread", channel_id=stub.thread_id, author="bob")
        message = await inbox.next()
        assert isinstance(message.channel, discord.Thread) and message.channel.id == stub.thread_id

        general = client.get_channel(stub.channel_id)
        assert isinstance(general, discord.TextChannel)
        sent = await general.send("bot says hi")
        await stub.user_message("replying", reply_to=sent.id)
        message = await inbox.next()
        assert message.type is discord.MessageType.reply and message.reference is not None
        assert isinstance(message.reference.resolved, discord.Message)
        assert message.reference.resolved.author.id == stub.bot.id
        assert client.user in message.mentions

        await stub.voice_message(b"OggS fake audio", duration_secs=2.5)
        message = await inbox.next()
        assert message.flags.voice and message.flags.value & MsgFlag.IS_VOICE_MESSAGE and message.content == ""
        [voice] = message.attachments
        assert voice.is_voice_message() and voice.duration == 2.5 and voice.waveform
        assert voice.content_type == "audio/ogg" and await voice.read() == b"OggS fake audio"


async def test_dm_arrives_on_a_dm_channel_and_the_bot_can_answer(stub: DiscordStub) -> None:
    client = make_client()
    inbox = Inbox(client)
    async with running_client(stub, client, TOKEN):
        payload = await stub.dm_message("psst", author="bob")
        message = await inbox.next()
        assert isinstance(message.channel, discord.DMChannel) and message.guild is None
        assert message.content == "psst" and message.author.id == stub.user("bob").id
        await message.channel.send("hello bob")
        request = await stub.wait_for_request("POST", rf"^/channels/{payload['channel_id']}/messages$")
        assert request.json["content"] == "hello bob"

        alice = await client.fetch_user(stub.user("alice").id)
        dm = await client.create_dm(alice)
        assert dm.recipient is not None and dm.recipient.name == "alice"
        assert await stub.wait_for_request("POST", r"^/users/@me/channels$")


async def test_bot_sends_a_file_then_edits_the_message(stub: DiscordStub) -> None:
    client = make_client()
    async with running_client(stub, client, TOKEN):
        channel = client.get_channel(stub.channel_id)
        assert isinstance(channel, discord.TextChannel)
        data = bytes(range(256)) * 10
        async with channel.typing():
            sent = await channel.send("here you go", file=discord.File(io.BytesIO(data), "report.bin"))
        edited = await sent.edit(content="here you go (edited)")

    [post] = stub.requests_to("POST", MESSAGES_PATH)
    assert post.json["content"] == "here you go"
    [upload] = post.files
    assert (upload.field, upload.filename, upload.data) == ("files[0]", "report.bin", data)
    assert sent.attachments[0].filename == "report.bin" and sent.attachments[0].size == len(data)
    assert stub.requests_to("POST", r"^/channels/\d+/typing$")
    [patch] = stub.requests_to("PATCH", rf"^/channels/{stub.channel_id}/messages/{sent.id}$")
    assert patch.json["content"] == "here you go (edited)"
    assert edited.content == "here you go (edited)" and edited.edited_at is not None
    assert [v["content"] for v in stub.edits(sent.id)] == ["here you go"]
    assert stub.sent_messages(stub.channel_id)[-1]["content"] == "here you go (edited)"


async def test_heartbeats_are_acknowledged(stub: DiscordStub) -> None:
    client = make_client()
    async with running_client(stub, client, TOKEN):
        await stub.wait_until(lambda: stub.gateway.heartbeat_count >= 3, 3, "3 heartbeats")
        await asyncio.sleep(0.05)
        assert math.isfinite(client.latency)
    assert stub.gateway.identify_count == 1


@pytest.mark.parametrize("code", [4000, None], ids=["close-4000", "abrupt"])
async def test_after_a_disconnect_the_client_resumes_and_gets_missed_and_new_events(
    stub: DiscordStub, code: int | None
) -> None:
    client = make_client()
    inbox = Inbox(client)
    resumed = asyncio.Event()

    @client.event
    async def on_resumed() -> None:
        resumed.set()

    async with running_client(stub, client, TOKEN):
        await stub.disconnect(code)
        await stub.user_message("sent while disconnected")
        await stub.wait_until(lambda: stub.gateway.resume_count == 1, 5, "RESUME")
        await asyncio.wait_for(resumed.wait(), 5)
        assert (await inbox.next()).content == "sent while disconnected"
        await stub.user_message("after the resume")
        assert (await inbox.next()).content == "after the resume"
        assert stub.gateway.identify_count == 1
        assert stub.gateway.connections[-1].path == "/gateway-resume"  # READY's resume_gateway_url
        assert stub.gateway.resumes[0]["session_id"] == client.ws.session_id


async def test_reconnect_request_resumes_and_a_non_resumable_close_identifies_afresh(stub: DiscordStub) -> None:
    client = make_client()
    inbox = Inbox(client)

    async def identify_at_once(shard_id: int | None, *, initial: bool = False) -> None:
        pass  # discord.py's default sleeps 5 s before every re-IDENTIFY

    client.before_identify_hook = identify_at_once  # type: ignore[method-assign]
    async with running_client(stub, client, TOKEN):
        first_session = stub.gateway.session
        await stub.gateway.request_reconnect()  # op 7
        await stub.wait_until(lambda: stub.gateway.resume_count == 1, 5, "RESUME after op 7")
        await stub.disconnect(4009)  # session timed out: RESUME is refused with op 9, the client IDENTIFYs
        await stub.wait_identified(2)
        assert stub.gateway.session is not first_session and stub.gateway.resume_count == 2
        await stub.user_message("on the new session")
        assert (await inbox.next()).content == "on the new session"


async def test_slash_command_is_synced_and_invoked_with_defer_then_followup(stub: DiscordStub) -> None:
    client = make_client()
    tree = app_commands.CommandTree(client)
    seen: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    @tree.command(name="ask", description="Ask the bot something")
    async def ask(interaction: discord.Interaction, question: str, file: discord.Attachment | None = None) -> None:
        await interaction.response.defer(thinking=True)
        data = await file.read() if file is not None else b""
        await interaction.followup.send(f"answer to {question}", file=discord.File(io.BytesIO(b"result"), "r.txt"))
        seen.put_nowait((question, data))

    async def setup_hook() -> None:
        await tree.sync()
        tree.copy_global_to(guild=discord.Object(stub.guild.id))
        await tree.sync(guild=discord.Object(stub.guild.id))

    client.setup_hook = setup_hook  # type: ignore[method-assign]
    async with running_client(stub, client, TOKEN):
        [global_sync] = stub.requests_to("PUT", rf"^/applications/{stub.application_id}/commands$")
        assert [c["name"] for c in global_sync.json] == ["ask"]
        assert stub.requests_to("PUT", rf"^/applications/\d+/guilds/{stub.guild.id}/commands$")
        assert stub.commands.sync_counts == {None: 1, stub.guild.id: 1}
        options = {o["name"]: o["type"] for o in stub.commands.scopes[None][0]["options"]}
        assert options == {"question": 3, "file": 11}

        record = await stub.slash_command("ask", {"question": "why?", "file": Upload("q.txt", b"context")})
        assert await asyncio.wait_for(seen.get(), 5) == ("why?", b"context")
        assert record.payload["data"]["guild_id"] == str(stub.guild.id)  # resolved to the guild command

    callback = record.callback
    assert callback is not None and callback.type == 5
    assert record.callback_latency_s is not None and record.callback_latency_s < 3
    [followup] = stub.requests_to("POST", rf"^/webhooks/{stub.application_id}/{record.token}$")
    assert followup.at >= callback.at and followup.query.get("wait") == "1"
    assert followup.json["content"] == "answer to why?" and followup.files[0].data == b"result"
    assert not followup.authorized  # interaction webhooks carry no bot token
    assert record.original_message_id is not None
    original = stub.world.messages[record.original_message_id]
    assert original["flags"] & MsgFlag.LOADING  # still "thinking": the bot followed up instead of editing


async def test_component_click_reaches_the_view_callback(stub: DiscordStub) -> None:
    client = make_client()
    interactions: list[discord.Interaction] = []

    @client.event
    async def on_interaction(interaction: discord.Interaction) -> None:
        interactions.append(interaction)

    clicked = asyncio.Event()

    class Confirm(discord.ui.View):
        @discord.ui.button(label="Yes", custom_id="confirm:yes")
        async def yes(self, interaction: discord.Interaction, button: discord.ui.Button[Confirm]) -> None:
            await interaction.response.edit_message(content="confirmed", view=None)
            clicked.set()

    async with running_client(stub, client, TOKEN):
        channel = client.get_channel(stub.channel_id)
        assert isinstance(channel, discord.TextChannel)
        sent = await channel.send("Sure?", view=Confirm())
        assert stub.world.messages[sent.id]["components"][0]["components"][0]["custom_id"] == "confirm:yes"
        record = await stub.click(sent.id, "confirm:yes", user="bob")
        await asyncio.wait_for(clicked.wait(), 5)

    assert record.callback is not None and record.callback.type == 7
    assert stub.world.messages[sent.id]["content"] == "confirmed"
    assert [i.type for i in interactions] == [discord.InteractionType.component]
    assert interactions[0].user.name == "bob"


async def test_a_429_is_waited_out_and_retried_and_a_403_raises_forbidden(stub: DiscordStub) -> None:
    client = make_client()
    async with running_client(stub, client, TOKEN):
        channel = client.get_channel(stub.channel_id)
        assert isinstance(channel, discord.TextChannel)
        fault = stub.fail_next("POST", MESSAGES_PATH, status=429, retry_after=0.3)
        started = time.monotonic()
        sent = await channel.send("eventually")
        assert time.monotonic() - started >= 0.3 and fault.hits == 1
        first, second = stub.requests_to("POST", MESSAGES_PATH)
        assert (first.status, second.status) == (429, 200) and second.at - first.at >= 0.3
        assert sent.content == "eventually"

        stub.fail_next("POST", MESSAGES_PATH, status=403)
        with pytest.raises(discord.Forbidden) as raised:
            await channel.send("nope")
        assert raised.value.code == 50013 and raised.value.text == "Missing Permissions"


async def test_without_the_message_content_intent_guild_content_is_blank_unless_mentioned() -> None:
    guild = GuildSpec(bot_permissions=Perm.VIEW_CHANNEL, everyone_permissions=Perm.VIEW_CHANNEL)
    async with DiscordStub(heartbeat_interval_ms=1000, guilds=[guild]) as stub:
        client = discord.Client(intents=discord.Intents.default(), guild_ready_timeout=0.05)
        inbox = Inbox(client)
        async with running_client(stub, client):
            await stub.user_message("secret", attachments=[Upload("a.txt", b"x")])
            message = await inbox.next()
            assert message.content == "" and message.attachments == []
            await stub.user_message(f"<@{stub.bot.id}> hi")
            assert (await inbox.next()).content == f"<@{stub.bot.id}> hi"
            channel = client.get_channel(stub.channel_id)
            assert isinstance(channel, discord.TextChannel)
            with pytest.raises(discord.Forbidden):  # no SEND_MESSAGES in this guild
                await channel.send("hello")


async def test_disallowed_privileged_intent_closes_with_4014() -> None:
    async with DiscordStub(privileged_intents=0) as stub:
        with pytest.raises(discord.PrivilegedIntentsRequired):
            async with running_client(stub, make_client(), ready_timeout=5):
                pass


async def test_bot_responds_edits_original_and_follow_up_and_reads_them_back(stub: DiscordStub) -> None:
    bot = commands.Bot(command_prefix="!", intents=intents(), guild_ready_timeout=0.05)
    done: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    @bot.tree.command(name="draft", description="Answer, then revise")
    async def draft(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("v1", file=discord.File(io.BytesIO(b"one"), "one.txt"))
        await interaction.edit_original_response(content="v2")
        original = await interaction.original_response()
        followup = await interaction.followup.send("later", wait=True)
        await followup.edit(content="later, edited")
        done.put_nowait((original.content, followup.content))

    async with running_client(stub, bot, TOKEN):
        await bot.tree.sync()
        assert [c.name for c in await bot.tree.fetch_commands()] == ["draft"]
        record = await stub.slash_command("draft", dm=True)
        assert await asyncio.wait_for(done.get(), 5) == ("v2", "later")

    assert record.guild_id is None and record.payload["channel"]["type"] == 1  # a DM interaction
    callback = record.callback
    assert callback is not None and callback.type == 4 and callback.data["content"] == "v1"
    [callback_request] = stub.requests_to("POST", rf"^/interactions/{record.id}/")
    assert callback_request.files[0].data == b"one" and callback_request.query == {"with_response": "1"}
    assert stub.requests_to("GET", r"/messages/@original$")
    assert [r.json["content"] for r in stub.requests_to("PATCH", r"^/webhooks/")] == ["v2", "later, edited"]
    assert record.original_message_id is not None
    assert stub.world.messages[record.original_message_id]["content"] == "v2"
    assert [v["content"] for v in stub.edits(record.original_message_id)] == ["v1"]
    [followup_id] = record.followup_ids
    assert stub.world.messages[followup_id]["content"] == "later, edited"


async def test_a_callback_after_the_deadline_is_unknown_interaction() -> None:
    async with DiscordStub(callback_deadline_s=0.1) as stub:
        client = make_client()
        tree = app_commands.CommandTree(client)
        errors: asyncio.Queue[BaseException] = asyncio.Queue()

        @tree.command(name="slow", description="Too slow to answer")
        async def slow(interaction: discord.Interaction) -> None:
            await asyncio.sleep(0.2)
            try:
                await interaction.response.defer()
            except discord.HTTPException as exc:
                errors.put_nowait(exc)

        async with running_client(stub, client):
            record = await stub.slash_command("slow")
            error = await asyncio.wait_for(errors.get(), 5)
        assert isinstance(error, discord.NotFound) and error.code == 10062
        assert record.late_callbacks == 1 and record.callback is None


async def test_auto_sharded_client_discovers_the_gateway_via_gateway_bot(stub: DiscordStub) -> None:
    client = discord.AutoShardedClient(intents=intents(), guild_ready_timeout=0.05)
    async with running_client(stub, client, TOKEN):
        assert client.shard_count == 1 and client.get_guild(stub.guild.id) is not None
    assert stub.requests_to("GET", r"^/gateway/bot$")
    assert stub.gateway.identifies[0].shard == [0, 1]


async def test_compression_can_be_negotiated_off() -> None:
    async with DiscordStub(compression="off") as stub:
        client = make_client()
        inbox = Inbox(client)
        async with running_client(stub, client):
            await stub.user_message("plain text frames")
            assert (await inbox.next()).content == "plain text frames"
        connection = stub.gateway.connections[0]
        assert connection.query["compress"] == "zlib-stream" and not connection.compressed
