"""A websocket client that speaks the web chat's protocol, as the page does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp


class Visitor:
    """One browser tab: hello, messages, actions, uploads; frames collected as they arrive."""

    def __init__(self, base_url: str, locale: str = "en-US", visitor: str | None = None) -> None:
        self.base_url = base_url
        self.locale = locale
        self.visitor = visitor or uuid.uuid4().hex
        self.frames: list[dict[str, Any]] = []
        self.welcome: dict[str, Any] = {}
        self._new = asyncio.Condition()
        self._session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Visitor:
        self._session = aiohttp.ClientSession()
        self.ws = await self._session.ws_connect(f"{self.base_url}/ws")
        await self.ws.send_json({"type": "hello", "visitor": self.visitor, "locale": self.locale})
        self.welcome = await self.ws.receive_json(timeout=10)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader:
            self._reader.cancel()
        if self.ws:
            await self.ws.close()
        if self._session:
            await self._session.close()

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                async with self._new:
                    self.frames.append(msg.json())
                    self._new.notify_all()

    async def send(self, text: str, attachments: list[str] | None = None, id: str | None = None) -> str:
        assert self.ws is not None
        mid = id or uuid.uuid4().hex
        await self.ws.send_json({"type": "message", "id": mid, "text": text, "attachments": attachments or []})
        return mid

    async def click(self, action_id: str, value: str) -> str:
        assert self.ws is not None
        mid = uuid.uuid4().hex
        await self.ws.send_json({"type": "action", "id": mid, "action_id": action_id, "value": value})
        return mid

    async def send_raw(self, data: str | bytes) -> None:
        assert self.ws is not None
        if isinstance(data, bytes):
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(data)

    def replies(self, reply_to: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("reply_to") == reply_to]

    async def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float = 15) -> dict[str, Any]:
        """The first frame (already seen or arriving) that `match` accepts."""
        async def found() -> dict[str, Any]:
            async with self._new:
                while True:
                    for frame in self.frames:
                        if match(frame):
                            return frame
                    await self._new.wait()

        return await asyncio.wait_for(found(), timeout)

    async def reply(self, reply_to: str, kind: str = "message", timeout: float = 15,
                    contains: str | None = None) -> dict[str, Any]:
        return await self.wait_for(
            lambda f: f.get("reply_to") == reply_to and f.get("type") == kind
            and (contains is None or contains in f.get("text", "")),
            timeout,
        )

    async def upload(self, name: str, data: bytes) -> tuple[int, dict[str, Any]]:
        assert self._session is not None
        form = aiohttp.FormData()
        form.add_field("file", data, filename=name)
        async with self._session.post(f"{self.base_url}/api/upload?locale={self.locale}", data=form) as resp:
            return resp.status, await resp.json()
