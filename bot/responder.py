"""How handlers answer: the Responder protocol and a base that adapters build on.

Adapters implement four primitives (`_post`, `_edit`, `_upload`, `_error`); the base turns
them into splitting, throttled streaming and throttled progress, the same on every platform.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

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

    def stream(self) -> StreamContext: ...

    async def upload(
        self, data: bytes, name: str, mime: str, *, caption: str | None = None, buttons: Sequence[Button] = ()
    ) -> str: ...

    async def progress(self, fraction: float, note: str = "") -> None: ...

    async def error(self, text: str) -> None: ...

    async def typing(self) -> None: ...

    async def card(self, title: str, text: str, *, buttons: Sequence[Button] = ()) -> list[str]: ...

    async def link(self, channel_id: str, message_ref: str) -> str | None: ...


def progress_bar(fraction: float, width: int = 20) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


class BaseResponder:
    """Splitting, streaming and progress on top of an adapter's primitives."""

    limit = 4000

    def __init__(self, stream_interval_s: float = 1.0, progress_interval_s: float = 2.0) -> None:
        self.stream_interval_s = stream_interval_s
        self.progress_interval_s = progress_interval_s
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
        parts = split_message(text, self.limit) or [text]
        ids = []
        for i, part in enumerate(parts):
            ids.append(await self._post(part, buttons if i == len(parts) - 1 else ()))
        return ids

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
        await self._flush(final=True)

    async def write(self, delta: str) -> None:
        self._text += delta
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
