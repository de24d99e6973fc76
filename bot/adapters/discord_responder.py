"""Answers on Discord: 2,000-character messages, throttled edits, files within the server's upload
limit, buttons as components, and interaction follow-ups after a defer."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Sequence
from typing import Any

import discord

from bot.messages import t
from bot.responder import BaseResponder, Button

log = logging.getLogger(__name__)

LIMIT = 2000
TOKEN_LIFETIME_S = 14 * 60  # interaction tokens last 15 minutes; switch to channel messages before that
STYLES = {"primary": discord.ButtonStyle.primary, "danger": discord.ButtonStyle.danger}


def view_for(buttons: Sequence[Button]) -> discord.ui.View | None:
    """A view whose buttons carry `action_id|value`; clicks come back through on_interaction."""
    if not buttons:
        return None
    view = discord.ui.View(timeout=None)
    for button in buttons[:25]:
        view.add_item(discord.ui.Button(label=button.label[:80], custom_id=f"{button.action_id}|{button.value}"[:100],
                                        style=STYLES.get(button.style or "", discord.ButtonStyle.secondary)))
    return view


def upload_limit(channel: Any) -> int:
    guild = getattr(channel, "guild", None)
    return int(guild.filesize_limit) if guild is not None else 10 * 2**20


class DiscordResponder(BaseResponder):
    """Replies to a message in its channel (the first reply references it)."""

    limit = LIMIT

    def __init__(self, channel: Any, reference: discord.Message | None, user: Any, locale: str | None, *,
                 stream_interval_s: float, progress_interval_s: float) -> None:
        super().__init__(stream_interval_s, progress_interval_s)
        self.channel = channel
        self.reference = reference
        self.user = user
        self.locale = locale
        self._messages: dict[str, discord.Message] = {}

    async def notify(self, channel_id: str, text: str) -> None:
        guild = getattr(self.channel, "guild", None)
        target = guild.get_channel_or_thread(int(channel_id)) if guild is not None else None
        if target is None:
            raise LookupError(f"no channel {channel_id} in this server")
        await target.send(text[:LIMIT], allowed_mentions=discord.AllowedMentions.none())

    async def link(self, channel_id: str, message_ref: str) -> str | None:
        guild = getattr(self.channel, "guild", None)
        return f"https://discord.com/channels/{guild.id if guild else '@me'}/{channel_id}/{message_ref}"

    async def _send(self, **kwargs: Any) -> discord.Message:
        view = kwargs.get("view")
        try:
            message: discord.Message = await self.channel.send(reference=self.reference, mention_author=False,
                                                               **{k: v for k, v in kwargs.items() if v is not None})
        except discord.Forbidden:
            await self._explain_forbidden()
            raise
        self.reference = None  # only the first reply points at the question
        if view is not None:
            view.stop()  # clicks are routed by custom_id in on_interaction, not by this view object
        self._messages[str(message.id)] = message
        return message

    async def _explain_forbidden(self) -> None:
        """No permission to post here: tell the user in a DM, or log when that fails too."""
        log.warning("missing permissions in channel %s", getattr(self.channel, "id", "?"))
        try:
            await self.user.send(t("discord_no_permission", self.locale, channel=getattr(self.channel, "name", "")))
        except discord.HTTPException:
            log.warning("could not DM user %s about missing permissions", getattr(self.user, "id", "?"))

    async def _post(self, text: str, buttons: Sequence[Button]) -> str:
        return str((await self._send(content=text, view=view_for(buttons))).id)

    async def _edit(self, message_id: str, text: str, buttons: Sequence[Button]) -> None:
        view = view_for(buttons)
        await self._messages[message_id].edit(content=text, view=view)
        if view is not None:
            view.stop()

    async def _upload(self, data: bytes, name: str, mime: str, caption: str | None,
                      buttons: Sequence[Button]) -> str:
        limit = upload_limit(self.channel)
        if len(data) > limit:
            return await self._post(t("discord_file_too_large", self.locale, name=name,
                                      limit_mb=round(limit / 2**20, 1)), buttons)
        message = await self._send(content=caption, file=discord.File(io.BytesIO(data), filename=name),
                                   view=view_for(buttons))
        return str(message.id)

    async def card(self, title: str, text: str, *, buttons: Sequence[Button] = ()) -> list[str]:
        """An embed; text too long for one falls back to plain messages."""
        if len(text) > 4000 or len(title) > 250:
            return await super().card(title, text, buttons=buttons)
        embed = discord.Embed(title=title, description=text, colour=discord.Colour.blurple())
        return [await self._post_embed(embed, buttons)]

    async def _post_embed(self, embed: discord.Embed, buttons: Sequence[Button]) -> str:
        return str((await self._send(embed=embed, view=view_for(buttons))).id)

    async def typing(self) -> None:
        try:
            await self.channel.typing()
        except discord.HTTPException:
            pass


class InteractionResponder(DiscordResponder):
    """Answers a deferred interaction: the first post fills the original response, later ones are
    follow-ups; once the token nears its 15 minutes, answers continue as channel messages."""

    def __init__(self, interaction: discord.Interaction, locale: str | None, *, stream_interval_s: float,
                 progress_interval_s: float) -> None:
        super().__init__(interaction.channel, None, interaction.user, locale, stream_interval_s=stream_interval_s,
                         progress_interval_s=progress_interval_s)
        self.interaction = interaction
        self.started = time.monotonic()
        self._original_used = False

    @property
    def _token_alive(self) -> bool:
        return time.monotonic() - self.started < TOKEN_LIFETIME_S

    async def _post(self, text: str, buttons: Sequence[Button]) -> str:
        if not self._token_alive:
            return await super()._post(text, buttons)
        view = view_for(buttons)
        kwargs: dict[str, Any] = {"view": view} if view is not None else {}
        message: discord.Message
        if not self._original_used:
            self._original_used = True
            message = await self.interaction.edit_original_response(content=text, **kwargs)
        else:
            message = await self.interaction.followup.send(text, wait=True, **kwargs)
        if view is not None:
            view.stop()
        self._messages[str(message.id)] = message
        return str(message.id)

    async def _upload(self, data: bytes, name: str, mime: str, caption: str | None,
                      buttons: Sequence[Button]) -> str:
        limit = upload_limit(self.channel)
        if len(data) > limit or not self._token_alive:
            return await super()._upload(data, name, mime, caption, buttons)
        view = view_for(buttons)
        kwargs: dict[str, Any] = {"view": view} if view is not None else {}
        message = await self.interaction.followup.send(caption or "", file=discord.File(io.BytesIO(data), name),
                                                       wait=True, **kwargs)
        if not self._original_used:
            self._original_used = True
            await self.interaction.delete_original_response()  # the "thinking…" placeholder
        self._messages[str(message.id)] = message
        return str(message.id)

    async def _post_embed(self, embed: discord.Embed, buttons: Sequence[Button]) -> str:
        if not self._token_alive:
            return await super()._post_embed(embed, buttons)
        view = view_for(buttons)
        kwargs: dict[str, Any] = {"view": view} if view is not None else {}
        message: discord.Message
        if not self._original_used:
            self._original_used = True
            message = await self.interaction.edit_original_response(content=None, embed=embed, **kwargs)
        else:
            message = await self.interaction.followup.send(embed=embed, wait=True, **kwargs)
        if view is not None:
            view.stop()
        self._messages[str(message.id)] = message
        return str(message.id)

    async def _error(self, text: str) -> None:
        if not self._token_alive:
            await super()._post(text, ())
            return
        if not self._original_used:
            self._original_used = True
            await self.interaction.edit_original_response(content=text)
            return
        await self.interaction.followup.send(text, ephemeral=True)

    async def typing(self) -> None:
        return None  # the deferred interaction already shows "thinking…"
