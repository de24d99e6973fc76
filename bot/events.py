"""The one event type handlers see, whatever the platform."""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.errors import UnsupportedInput
from bot.filecheck import check_content


class EventKind(enum.StrEnum):
    COMMAND = "command"
    MESSAGE = "message"
    VOICE = "voice"
    IMAGE = "image"
    FILE = "file"
    ACTION = "action"  # a button click on something the bot posted


Fetch = Callable[[int], Awaitable[bytes]]


@dataclass(frozen=True)
class Attachment:
    """A file that came with an event; `read()` downloads it lazily, within a size limit.

    `fetch(limit)` is supplied by the adapter and must raise `UnsupportedInput("file_too_large")`
    or stop reading once more than `limit` bytes arrive.
    """

    name: str
    mime: str
    size: int
    fetch: Fetch = field(repr=False, compare=False)
    url: str | None = None

    @property
    def category(self) -> str:
        """audio, image, video, or document."""
        major = self.mime.split("/", 1)[0]
        return major if major in ("audio", "image", "video") else "document"

    async def read(self, limit: int) -> bytes:
        """Download the bytes, refusing empty files, files over `limit` and content that lies."""
        if self.size > limit:
            raise UnsupportedInput("file_too_large", name=self.name, limit_mb=round(limit / 2**20, 1))
        data = await self.fetch(limit)
        if len(data) > limit:
            raise UnsupportedInput("file_too_large", name=self.name, limit_mb=round(limit / 2**20, 1))
        check_content(self.name, data)
        return data


@dataclass(frozen=True)
class IncomingEvent:
    """What a person did in chat, translated by an adapter.

    `raw` is the platform payload, for the adapter only. `args` holds typed command options
    once the router has parsed them (adapters with native typed options fill it directly).
    """

    platform: str
    kind: EventKind
    event_id: str
    workspace_id: str
    channel_id: str
    user_id: str
    text: str = ""
    thread_id: str | None = None
    command: str | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    attachments: tuple[Attachment, ...] = ()
    locale: str | None = None
    user_name: str | None = None
    is_dm: bool = False
    from_bot: bool = False
    from_self: bool = False
    message_ref: str | None = None  # the platform's id of the message (Slack ts, Discord id): for links to it
    action_id: str | None = None
    action_value: str | None = None
    received_at: float = field(default_factory=time.monotonic, compare=False)
    raw: Any = field(default=None, repr=False, compare=False)

    @property
    def conversation_key(self) -> str:
        """One running conversation per user in a DM (or the web page); else the thread."""
        if self.is_dm:
            return f"dm:{self.user_id}"
        if self.thread_id:
            return f"{self.channel_id}:{self.thread_id}"
        return f"{self.channel_id}:{self.user_id}"


def kind_for_attachments(attachments: tuple[Attachment, ...]) -> EventKind:
    """The event kind a message with these files becomes: voice, image or file."""
    if not attachments:
        return EventKind.MESSAGE
    category = attachments[0].category
    if category == "audio":
        return EventKind.VOICE
    if category == "image":
        return EventKind.IMAGE
    return EventKind.FILE
