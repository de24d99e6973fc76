"""How handlers answer: the Responder protocol and a base that adapters build on.

Adapters implement four primitives (`_post`, `_edit`, `_upload`, `_error`); the base turns
them into splitting, throttled streaming and throttled progress, the same on every platform.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from bot.errors import UserFacingError
from bot.textsplit import split_message


@dataclass(frozen=True)
class Button:
    """An action under a message; a click comes back as an `action` event."""

    label: str
    action_id: str
    value: str = ""
    style: str | None = None  # "primary" | "danger" | None


class StreamWriter(Protocol):
    async def write(self, delta: str) -> None: ...

    async def set_buttons(self, buttons: Sequence[Button]) -> None: ...

    @property
    def text(self) -> str: ...


class Responder(Protocol):
    """Answers one event on its platform."""

    limit: int

    async def send(self, text: str, *, buttons: Sequence[Button] = ()) -> list[str]: ...

    async def edit(self, message_id: str, text: str, *, buttons: Sequence[Button] = ()) -> None: ...

    def stream(self) -> StreamContext: ...

    async def upload(
        self, data: bytes, name: str, mime: str, *, caption: str | None = None, buttons: Sequence[Button] = ()
    ) -> str: ...

    async def progress(self, fraction: float, note: str = "") -> None: ...

    async def preview(self, png: bytes, fraction: float, note: str = "") -> None: ...

    async def error(self, text: str) -> None: ...

    async def typing(self) -> None: ...

    async def card(self, title: str, text: str, *, buttons: Sequence[Button] = ()) -> list[str]: ...

    async def link(self, channel_id: str, message_ref: str) -> str | None: ...

    async def notify(self, channel_id: str, text: str) -> None: ...


def progress_bar(fraction: float, width: int = 20) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


Guard = Callable[[str], Awaitable[str | None]]


class ReplyBlocked(UserFacingError):
    """The bot's own reply crossed the content policy; what was shown of it has been replaced."""


class BaseResponder:
    """Splitting, streaming and progress on top of an adapter's primitives."""

    limit = 4000

    def __init__(self, stream_interval_s: float = 1.0, progress_interval_s: float = 2.0) -> None:
        self.stream_interval_s = stream_interval_s
        self.progress_interval_s = progress_interval_s
        # Set by the moderation middleware: the text about to be shown -> a replacement if it is blocked.
        self.guard: Guard | None = None
        self.guard_every = 160  # a growing streamed reply is checked each time it gains this many characters
        self._progress_id: str | None = None
        self._progress_at = 0.0
        self._progress_lock = asyncio.Lock()

    # -- primitives an adapter implements -------------------------------------------------
    async def _post(self, text: str, buttons: Sequence[Button]) -> str:
        raise NotImplementedError

    async def _edit(self, message_id: str, text: str, buttons: Sequence[Button]) -> None:
        raise NotImplementedError

    async def _upload(
        self, data: bytes, name: str, mime: str, caption: str | None, buttons: Sequence[Button]
    ) -> str:
        raise NotImplementedError

    async def _error(self, text: str) -> None:
        await self._post(text, ())

    async def _progress(self, progress_id: str | None, fraction: float, note: str) -> str:
        """Post or edit a status message; platforms with native progress override this."""
        text = f"{progress_bar(fraction)} {round(fraction * 100)}% {note}".rstrip()
        if progress_id is None:
            return await self._post(text, ())
        await self._edit(progress_id, text, ())
        return progress_id

    # -- the Responder API ----------------------------------------------------------------
    async def send(self, text: str, *, buttons: Sequence[Button] = ()) -> list[str]:
        replacement = await self.guard(text) if self.guard is not None else None
        if replacement is not None:
            await self._post(replacement, ())
            raise ReplyBlocked("reply_blocked")
        parts = split_message(text, self.limit) or [text]
        ids = []
        for i, part in enumerate(parts):
            ids.append(await self._post(part, buttons if i == len(parts) - 1 else ()))
        return ids

    async def edit(self, message_id: str, text: str, *, buttons: Sequence[Button] = ()) -> None:
        """Replace the text (and buttons) of a short message this responder sent (a status line)."""
        await self._edit(message_id, text, buttons)

    def stream(self) -> StreamContext:
        return StreamContext(self)

    async def upload(
        self, data: bytes, name: str, mime: str, *, caption: str | None = None, buttons: Sequence[Button] = ()
    ) -> str:
        return await self._upload(data, name, mime, caption, buttons)

    async def progress(self, fraction: float, note: str = "") -> None:
        """Show how far a long job is; throttled, except the first and the final update."""
        async with self._progress_lock:
            now = time.monotonic()
            done = fraction >= 1.0
            if self._progress_id is not None and not done and now - self._progress_at < self.progress_interval_s:
                return
            self._progress_at = now
            self._progress_id = await self._progress(self._progress_id, fraction, note)

    async def preview(self, png: bytes, fraction: float, note: str = "") -> None:
        """A small look at a job in progress (an image being drawn). Platforms that can only post files
        upload it; the caller throttles. The web page shows it inside the progress bar instead."""
        await self._upload(png, "preview.png", "image/png", f"{round(fraction * 100)}% {note}".strip(), ())

    async def error(self, text: str) -> None:
        await self._error(text)

    async def typing(self) -> None:
        """Show that an answer is coming (a platform typing indicator); the web page shows its own."""
        return None

    async def card(self, title: str, text: str, *, buttons: Sequence[Button] = ()) -> list[str]:
        """A rich result with a title (an embed on Discord); plain platforms get a bold title line."""
        return await self.send(f"*{title}*\n{text}", buttons=buttons)

    async def link(self, channel_id: str, message_ref: str) -> str | None:
        """A URL that opens that message on the platform, or None where there is none."""
        return None

    async def notify(self, channel_id: str, text: str) -> None:
        """Post `text` to another channel of the same workspace (e.g. the moderators'); not guarded."""
        raise NotImplementedError(f"{type(self).__name__} cannot post to other channels")


class StreamContext:
    """`async with responder.stream() as w: await w.write(delta)`: one message, edited at most
    once per `stream_interval_s`; text past the platform limit continues in a new message."""

    def __init__(self, responder: BaseResponder) -> None:
        self.r = responder
        self._text = ""
        self._ids: list[str] = []
        self._shown_parts: list[str] = []
        self._buttons: Sequence[Button] = ()
        self._last_edit = 0.0
        self._lock = asyncio.Lock()
        self._pending: asyncio.Task[None] | None = None
        self._checked = 0  # length of the text the guard last passed

    @property
    def text(self) -> str:
        return self._text

    @property
    def message_ids(self) -> list[str]:
        return list(self._ids)

    async def __aenter__(self) -> StreamContext:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._pending is not None:
            self._pending.cancel()
        if exc is None and len(self._text) > self._checked:
            await self._check()
        await self._flush(final=True)

    async def _check(self) -> None:
        """Run the responder's guard on the text so far; a blocked reply is replaced and stopped."""
        self._checked = len(self._text)
        guard = self.r.guard
        replacement = await guard(self._text) if guard is not None else None
        if replacement is None:
            return
        if self._pending is not None:
            self._pending.cancel()
        self._text = replacement
        self._buttons = ()
        for extra in self._ids[1:]:  # the reply had continued in more messages: blank them too
            await self.r._edit(extra, "…", ())
        self._ids, self._shown_parts = self._ids[:1], self._shown_parts[:1]
        await self._flush(final=True)
        raise ReplyBlocked("reply_blocked")

    async def write(self, delta: str) -> None:
        self._text += delta
        if self.r.guard is not None and len(self._text) - self._checked >= self.r.guard_every:
            await self._check()
        wait = self.r.stream_interval_s - (time.monotonic() - self._last_edit)
        if wait <= 0:
            await self._flush(final=False)
        elif self._pending is None or self._pending.done():
            self._pending = asyncio.create_task(self._flush_later(wait))

    async def set_buttons(self, buttons: Sequence[Button]) -> None:
        self._buttons = tuple(buttons)

    async def _flush_later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        await self._flush(final=False)

    async def _flush(self, final: bool) -> None:
        async with self._lock:
            parts = split_message(self._text, self.r.limit) if self._text.strip() else []
            if not parts:
                if final and not self._ids:
                    self._ids.append(await self.r._post("…", self._buttons))
                return
            # Splitting is stable: once a later part exists, earlier parts no longer change.
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                buttons = self._buttons if (final and last) else ()
                if i < len(self._ids):
                    if self._shown_parts[i] != part or (final and last and buttons):
                        await self.r._edit(self._ids[i], part, buttons)
                        self._shown_parts[i] = part
                else:
                    self._ids.append(await self.r._post(part, buttons))
                    self._shown_parts.append(part)
            self._last_edit = time.monotonic()
