"""Discord on discord.py: a gateway client whose application commands come from the registry.

Interactions are deferred first (well inside Discord's 3 seconds), then answered with follow-ups;
messages (DMs, mentions, replies to the bot, its threads, and channels set to answer everything)
become events. Listeners only translate; handling runs in tracked tasks, a bounded number at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import discord
from aiohttp import web
from discord import app_commands

from bot.adapters.discord_commands import RegistryTranslator, build_commands, payload_hash
from bot.adapters.discord_responder import DiscordResponder, InteractionResponder
from bot.context import Services
from bot.events import Attachment, EventKind, IncomingEvent, kind_for_attachments
from bot.filecheck import guess_mime
from bot.messages import normalize_locale
from bot.responder import Responder
from bot.router import Command, split_command
from bot.tasks import TaskTracker

log = logging.getLogger(__name__)

Dispatch = Callable[[IncomingEvent, Responder], Coroutine[Any, Any, None]]
SYNC_KEY = "discord.commands.hash"


def invite_url(application_id: int, permissions: int) -> str:
    return (f"https://discord.com/oauth2/authorize?client_id={application_id}"
            f"&scope=bot%20applications.commands&permissions={permissions}")


class DiscordAdapter:
    """Translates Discord messages and interactions to `IncomingEvent`s."""

    def __init__(self, services: Services, dispatch: Dispatch, tasks: TaskTracker) -> None:
        token = services.settings.secrets.discord_bot_token
        if token is None:
            raise ValueError("DISCORD_BOT_TOKEN is not set")
        self.services = services
        self.dispatch = dispatch
        self.tasks = tasks
        self.settings = services.settings.discord
        self.token = token.get_secret_value()
        self._working = asyncio.Semaphore(self.settings.max_concurrent_events)
        self._run: asyncio.Task[None] | None = None
        self.client = self._make_client(self.settings.message_content)

    def _make_client(self, message_content: bool) -> discord.Client:
        intents = discord.Intents.default()
        intents.message_content = message_content
        cls = discord.AutoShardedClient if self.settings.sharded else discord.Client
        client = cls(intents=intents, guild_ready_timeout=self.settings.guild_ready_timeout_s)
        self.tree = app_commands.CommandTree(client)
        for command in build_commands(self.services.router, self._on_command):
            self.tree.add_command(command)
        self.tree.on_error = self._on_tree_error  # type: ignore[method-assign]
        client.event(self.on_message)
        client.event(self.on_interaction)
        self._ready = asyncio.Event()

        async def on_ready() -> None:
            self._ready.set()

        client.event(on_ready)
        return client

    # -- lifecycle --------------------------------------------------------------------------------
    def routes(self, app: web.Application) -> None:
        return None  # Discord talks over its gateway; nothing to serve

    async def start(self, ready_timeout: float = 60.0) -> None:
        await self.tree.set_translator(RegistryTranslator())
        try:
            await self._connect(ready_timeout)
        except discord.PrivilegedIntentsRequired:
            log.warning("Discord refused the message content intent: enable it under Bot -> Privileged Gateway "
                        "Intents, or set [discord] message_content = false. Answering mentions and DMs only.")
            await self.client.close()
            self.client = self._make_client(message_content=False)
            await self.tree.set_translator(RegistryTranslator())
            await self._connect(ready_timeout)
        if not self.client.intents.message_content:
            log.warning("Discord: no message content intent; the bot answers mentions, replies and DMs only")
        await self.sync_commands()
        log.info("Discord: signed in as %s in %d server(s)", self.client.user, len(self.client.guilds))

    async def _connect(self, ready_timeout: float) -> None:
        await self.client.login(self.token)
        self._ready.clear()
        self._run = asyncio.create_task(self.client.connect(reconnect=True))
        ready = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait({self._run, ready}, timeout=ready_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if self._run in done:
            ready.cancel()
            self._run.result()  # raises what stopped the connection
        if ready not in done:
            ready.cancel()
            raise TimeoutError("Discord did not become ready in time")

    async def close(self) -> None:
        await self.client.close()
        if self._run is not None:
            self._run.cancel()
            await asyncio.gather(self._run, return_exceptions=True)

    async def sync_commands(self) -> None:
        """Sync to the dev guilds, or globally; only when the commands changed since the last sync."""
        payload = [command.to_dict(self.tree) for command in self.tree.get_commands()]
        targets: list[int | None] = list(self.settings.dev_guilds) or [None]
        digest = payload_hash([{"commands": payload, "targets": targets}])
        if await self.services.store.state.get(SYNC_KEY) == digest:
            log.info("Discord: commands unchanged since the last sync")
            return
        for guild_id in targets:
            guild = discord.Object(id=guild_id) if guild_id else None
            if guild is not None:
                self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
        await self.services.store.state.set(SYNC_KEY, digest)
        log.info("Discord: synced %d commands to %s", len(payload), targets if targets != [None] else "everyone")

    # -- translation ----------------------------------------------------------------------------------
    def _wants(self, message: discord.Message) -> bool:
        me = self.client.user
        if me is None or message.author.bot or message.author.id == me.id:
            return False
        if message.guild is None or me in message.mentions:
            return True
        reference = message.reference.resolved if message.reference else None
        if isinstance(reference, discord.Message) and reference.author.id == me.id:
            return True
        if isinstance(message.channel, discord.Thread) and message.channel.owner_id == me.id:
            return True
        return message.channel.id in self.settings.answer_channels

    async def _in_known_thread(self, message: discord.Message) -> bool:
        """A thread the bot already talks in (it has a conversation there)."""
        if not isinstance(message.channel, discord.Thread) or message.guild is None or message.author.bot:
            return False
        thread = str(message.channel.id)
        return await self.services.store.conversations.exists("discord", str(message.guild.id), thread,
                                                              f"{thread}:{thread}")

    async def on_message(self, message: discord.Message) -> None:
        if not self._wants(message) and not await self._in_known_thread(message):
            return
        me = self.client.user
        text = message.content
        if me is not None:
            text = text.replace(f"<@{me.id}>", "").replace(f"<@!{me.id}>", "").strip()
        attachments = tuple(self._attachment(a) for a in message.attachments)
        is_voice = message.flags.voice and attachments
        thread = message.channel.id if isinstance(message.channel, discord.Thread) else None
        common: dict[str, Any] = dict(
            platform="discord", event_id=f"msg:{message.id}",
            workspace_id=str(message.guild.id if message.guild else "dm"),
            channel_id=str(message.channel.id), user_id=str(message.author.id), user_name=message.author.display_name,
            thread_id=str(thread) if thread else None, is_dm=message.guild is None, attachments=attachments,
            locale=normalize_locale(str(message.guild.preferred_locale)) if message.guild else None, raw=message,
            message_ref=str(message.id),
        )
        parsed = split_command(text)
        if parsed:
            event = IncomingEvent(kind=EventKind.COMMAND, command=parsed[0], text=parsed[1], **common)
        else:
            kind = EventKind.VOICE if is_voice else kind_for_attachments(attachments)
            event = IncomingEvent(kind=kind, text=text, **common)
        responder = DiscordResponder(message.channel, message, message.author, event.locale, **self._pace())
        self._spawn(event, responder)

    async def _on_command(self, interaction: discord.Interaction, command: Command, values: dict[str, Any]) -> None:
        await interaction.response.defer(thinking=True)
        args = {k: self._attachment(v) if isinstance(v, discord.Attachment) else v for k, v in values.items()}
        event = IncomingEvent(
            platform="discord", kind=EventKind.COMMAND, event_id=f"int:{interaction.id}",
            workspace_id=str(interaction.guild_id or "dm"), channel_id=str(interaction.channel_id),
            user_id=str(interaction.user.id), user_name=interaction.user.display_name, command=command.name,
            args=args, is_dm=interaction.guild_id is None, locale=normalize_locale(str(interaction.locale)),
            raw=interaction,
        )
        self._spawn(event, InteractionResponder(interaction, event.locale, **self._pace()))

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Button clicks: `action_id|value` in the custom id, routed to the router's action handlers."""
        if interaction.type != discord.InteractionType.component:
            return
        data: dict[str, Any] = dict(interaction.data or {})
        custom_id = str(data.get("custom_id", ""))
        action, _, value = custom_id.partition("|")
        await interaction.response.defer(thinking=True)
        message = interaction.message
        event = IncomingEvent(
            platform="discord", kind=EventKind.ACTION, event_id=f"int:{interaction.id}",
            workspace_id=str(interaction.guild_id or "dm"), channel_id=str(interaction.channel_id),
            user_id=str(interaction.user.id), user_name=interaction.user.display_name,
            thread_id=str(interaction.channel_id) if isinstance(interaction.channel, discord.Thread) else None,
            is_dm=interaction.guild_id is None, action_id=action, action_value=value,
            locale=normalize_locale(str(interaction.locale)), raw=message,
        )
        self._spawn(event, InteractionResponder(interaction, event.locale, **self._pace()))

    async def _on_tree_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        log.warning("Discord command %s failed before dispatch: %s", interaction.command, error)

    def _pace(self) -> dict[str, float]:
        settings = self.services.settings.responder
        return {"stream_interval_s": settings.stream_interval_s, "progress_interval_s": settings.progress_interval_s}

    def _spawn(self, event: IncomingEvent, responder: Responder) -> None:
        async def work() -> None:
            async with self._working:
                await self.dispatch(event, responder)

        self.tasks.spawn(work(), name=f"discord:{event.event_id}")

    def _attachment(self, attachment: discord.Attachment) -> Attachment:
        async def fetch(limit: int) -> bytes:
            return await attachment.read()

        mime = attachment.content_type or guess_mime(attachment.filename)
        return Attachment(name=attachment.filename, mime=mime.split(";")[0], size=attachment.size, fetch=fetch,
                          url=attachment.url)

