"""Answers on Slack: threaded posts, throttled `chat.update` streaming, v2 file uploads,
ephemeral errors, Block Kit buttons, and per-channel pacing of new messages."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.responder import BaseResponder, Button

log = logging.getLogger(__name__)

SECTION_LIMIT = 3000  # characters in one section block; one section per message keeps fences whole


class ChannelPacer:
    """Spaces new messages to one channel at least `interval_s` apart (Slack allows ~1/s)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._next: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def wait(self, channel: str) -> None:
        if self.interval_s <= 0:
            return
        lock = self._locks.setdefault(channel, asyncio.Lock())
        async with lock:
            delay = self._next.get(channel, 0.0) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._next[channel] = time.monotonic() + self.interval_s
            if len(self._next) > 10_000:
                now = time.monotonic()
                self._next = {k: v for k, v in self._next.items() if v > now}
                self._locks = {k: v for k, v in self._locks.items() if k in self._next or v.locked()}


def blocks(text: str, buttons: Sequence[Button]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text[:SECTION_LIMIT] or " "}}]
    if buttons:
        out.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": b.label[:75], "emoji": True},
             "action_id": f"{b.action_id}:{i}", "value": b.value[:2000],
             **({"style": b.style} if b.style in ("primary", "danger") else {})}
            for i, b in enumerate(buttons[:25])
        ]})
    return out


def to_mrkdwn(text: str) -> str:
    """Markdown's **bold** to Slack's *bold*, outside code."""
    parts = text.split("```")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("**", "*")
    return "```".join(parts)


class SlackResponder(BaseResponder):
    """Replies in the event's thread. Errors of slash commands are ephemeral."""

    limit = SECTION_LIMIT

    def __init__(self, client: AsyncWebClient, channel: str, thread_ts: str | None, user: str, *,
                 pacer: ChannelPacer, ephemeral_errors: bool, stream_interval_s: float,
                 progress_interval_s: float) -> None:
        super().__init__(stream_interval_s, progress_interval_s)
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self.user = user
        self.pacer = pacer
        self.ephemeral_errors = ephemeral_errors

    async def notify(self, channel_id: str, text: str) -> None:
        await self.pacer.wait(channel_id)
        await self.client.chat_postMessage(channel=channel_id, text=to_mrkdwn(text), unfurl_links=False)

    async def link(self, channel_id: str, message_ref: str) -> str | None:
        try:
            resp = await self.client.chat_getPermalink(channel=channel_id, message_ts=message_ref)
        except Exception as e:  # a deleted message or a missing scope: no link, not an error
            log.info("chat.getPermalink failed: %s", type(e).__name__)
            return None
        return str(resp.get("permalink") or "") or None

    async def _post(self, text: str, buttons: Sequence[Button]) -> str:
        await self.pacer.wait(self.channel)
        text = to_mrkdwn(text)
        resp = await self.client.chat_postMessage(channel=self.channel, thread_ts=self.thread_ts, text=text,
                                                  blocks=blocks(text, buttons), unfurl_links=False)
        return str(resp["ts"])

    async def _edit(self, message_id: str, text: str, buttons: Sequence[Button]) -> None:
        text = to_mrkdwn(text)
        await self.client.chat_update(channel=self.channel, ts=message_id, text=text, blocks=blocks(text, buttons))

    async def _upload(self, data: bytes, name: str, mime: str, caption: str | None,
                      buttons: Sequence[Button]) -> str:
        await self.pacer.wait(self.channel)
        resp = await self.client.files_upload_v2(channel=self.channel, thread_ts=self.thread_ts, content=data,
                                                 filename=name, title=name, initial_comment=caption or None)
        file_id = str((resp.get("files") or [{}])[0].get("id", ""))
        if buttons:
            await self._post(caption or name, buttons)
        return file_id

    async def _error(self, text: str) -> None:
        if self.ephemeral_errors:
            try:
                await self.client.chat_postEphemeral(channel=self.channel, user=self.user, text=text,
                                                     thread_ts=self.thread_ts)
                return
            except SlackApiError as e:  # e.g. the bot is not in the channel: fall back to a DM
                log.info("ephemeral error reply failed (%s); sending it as a DM", e.response.get("error"))
                opened = await self.client.conversations_open(users=self.user)
                await self.client.chat_postMessage(channel=opened["channel"]["id"], text=text)
                return
        await self._post(text, ())
