"""The local web chat: a page at `/` talking to the bot over a websocket at `/ws`.

Protocol (JSON text frames):
  client -> server
    {"type": "hello", "visitor": "<id>", "locale": "zh-CN", "name": "Ada"}       first frame
    {"type": "message", "id": "<client id>", "text": "...", "attachments": ["<upload id>", ...]}
    {"type": "action", "id": "<client id>", "action_id": "suggest", "value": "/help"}
  server -> client
    {"type": "welcome", "locale": "en", "commands": [...schema...], "limits": {"max_upload_bytes": n}}
    {"type": "message", "id": "<msg id>", "text": "...", "buttons": [{"label","action_id","value"}],
     "reply_to": "<client id>"}
    {"type": "edit", "id": "<msg id>", "text": "...", "buttons": [...]}
    {"type": "file", "id": "<msg id>", "name": "...", "mime": "...", "url": "/files/<sha>/<name>",
     "caption": "...", "buttons": [...]}
    {"type": "progress", "id": "<bar id>", "fraction": 0.4, "note": "...", "reply_to": "..."}
    {"type": "error", "text": "...", "reply_to": "<client id>"}
Uploads: POST /api/upload (multipart field "file") -> {"id", "name", "mime", "size"}, or an error
status with {"error": "<message in the visitor's language>"}.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, WSMsgType, web

from bot.context import Services
from bot.errors import UnsupportedInput
from bot.events import Attachment, EventKind, IncomingEvent, kind_for_attachments
from bot.filecheck import check_content, guess_mime
from bot.messages import normalize_locale, t
from bot.responder import BaseResponder, Button
from bot.router import split_command
from bot.tasks import TaskTracker

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "webpage"
WORKSPACE = "web"
ID_RE = re.compile(r"^[\w-]{1,64}$")
MAX_FRAME = 1 << 20


def _buttons(buttons: Sequence[Button]) -> list[dict[str, str]]:
    return [{"label": b.label, "action_id": b.action_id, "value": b.value, "style": b.style or ""} for b in buttons]


class WebResponder(BaseResponder):
    """Answers one web event over the visitor's websocket."""

    limit = 4000

    def __init__(self, ws: web.WebSocketResponse, services: Services, reply_to: str, workspace_pk: int | None,
                 stream_interval_s: float, progress_interval_s: float) -> None:
        super().__init__(stream_interval_s, progress_interval_s)
        self.ws = ws
        self.services = services
        self.reply_to = reply_to
        self.workspace_pk = workspace_pk

    async def _send(self, frame: dict[str, Any]) -> None:
        if self.ws.closed:
            log.info("visitor left before reply %s", self.reply_to)
            return
        try:
            await self.ws.send_json(frame)
        except ConnectionError:
            log.info("visitor connection lost during reply %s", self.reply_to)

    async def _post(self, text: str, buttons: Sequence[Button]) -> str:
        mid = uuid.uuid4().hex
        await self._send({"type": "message", "id": mid, "text": text, "buttons": _buttons(buttons),
                          "reply_to": self.reply_to})
        return mid

    async def _edit(self, message_id: str, text: str, buttons: Sequence[Button]) -> None:
        await self._send({"type": "edit", "id": message_id, "text": text, "buttons": _buttons(buttons)})

    async def _upload(self, data: bytes, name: str, mime: str, caption: str | None,
                      buttons: Sequence[Button]) -> str:
        blob = await self.services.store.blobs.put(self.workspace_pk, name, mime, data, kind="generated")
        mid = uuid.uuid4().hex
        await self._send({"type": "file", "id": mid, "name": name, "mime": mime,
                          "url": f"/files/{blob.sha256}/{name}", "caption": caption or "",
                          "buttons": _buttons(buttons), "reply_to": self.reply_to})
        return mid

    async def _error(self, text: str) -> None:
        await self._send({"type": "error", "text": text, "reply_to": self.reply_to})

    async def _progress(self, progress_id: str | None, fraction: float, note: str) -> str:
        pid = progress_id or uuid.uuid4().hex
        await self._send({"type": "progress", "id": pid, "fraction": round(fraction, 4), "note": note,
                          "reply_to": self.reply_to})
        return pid

    async def preview(self, png: bytes, fraction: float, note: str = "") -> None:
        """Shown inside the progress bar (a data URL: previews are a few kilobytes)."""
        async with self._progress_lock:
            self._progress_id = self._progress_id or uuid.uuid4().hex
            await self._send({"type": "progress", "id": self._progress_id, "fraction": round(fraction, 4),
                              "note": note, "reply_to": self.reply_to,
                              "preview": "data:image/png;base64," + base64.b64encode(png).decode()})


class WebAdapter:
    """Serves the page, the websocket, uploads and files on the service's aiohttp app."""

    def __init__(self, services: Services, dispatch: Any, tasks: TaskTracker) -> None:
        self.services = services
        self.dispatch = dispatch
        self.tasks = tasks
        self._sockets: set[web.WebSocketResponse] = set()

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.index)
        app.router.add_get("/ws", self.websocket)
        app.router.add_post("/api/upload", self.upload)
        app.router.add_get("/api/commands", self.commands)
        app.router.add_get("/files/{sha}/{name}", self.file)
        app.router.add_static("/static", STATIC, show_index=False)

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"server shutting down")

    # -- HTTP -----------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def commands(self, request: web.Request) -> web.Response:
        locale = normalize_locale(request.query.get("locale")) or self.services.settings.default_locale
        return web.json_response(self.services.router.schema(locale))

    async def file(self, request: web.Request) -> web.StreamResponse:
        sha = request.match_info["sha"]
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise web.HTTPNotFound()
        blob = await self.services.store.blobs.by_sha(sha)
        if blob is None:
            raise web.HTTPNotFound()
        path = self.services.store.blobs.path(blob)
        return web.FileResponse(path, headers={"Content-Type": blob.mime, "Cache-Control": "private, max-age=3600"})

    async def upload(self, request: web.Request) -> web.Response:
        locale = normalize_locale(request.query.get("locale")) or normalize_locale(
            request.headers.get("Accept-Language")) or self.services.settings.default_locale
        limit = self.services.settings.limits.max_upload_bytes
        try:
            reader = await request.multipart()
            part = await reader.next()
            while part is not None and getattr(part, "name", None) != "file":
                part = await reader.next()
            if part is None or not isinstance(part, BodyPartReader) or not part.filename:
                raise UnsupportedInput("upload_missing")
            name = Path(part.filename).name[:200] or "upload"
            data = bytearray()
            while chunk := await part.read_chunk(64 * 1024):
                data.extend(chunk)
                if len(data) > limit:
                    raise UnsupportedInput("file_too_large", name=name, limit_mb=round(limit / 2**20, 1))
            check_content(name, bytes(data))
        except UnsupportedInput as e:
            status = 413 if e.key == "file_too_large" else 415 if e.key == "file_mismatch" else 400
            return web.json_response({"error": t(e.key, locale, **e.params)}, status=status)
        except ValueError:
            return web.json_response({"error": t("upload_missing", locale)}, status=400)
        mime = guess_mime(name, bytes(data))
        workspace_pk = await self._web_workspace()
        blob = await self.services.store.blobs.put(workspace_pk, name, mime, bytes(data))
        return web.json_response({"id": str(blob.id), "name": name, "mime": mime, "size": len(data)})

    async def _web_workspace(self) -> int:
        identity = await self.services.store.identity.ensure("web", WORKSPACE, "uploads", "uploads")
        return identity.workspace_pk

    # -- websocket ------------------------------------------------------------------------
    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_FRAME)
        await ws.prepare(request)
        self._sockets.add(ws)
        session: dict[str, Any] = {"visitor": uuid.uuid4().hex, "locale": None, "name": None}
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._frame(ws, session, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self._bad_frame(ws, session)
                elif msg.type == WSMsgType.ERROR:
                    log.info("websocket error: %s", ws.exception())
        finally:
            self._sockets.discard(ws)
        return ws

    async def _bad_frame(self, ws: web.WebSocketResponse, session: dict[str, Any], reply_to: str = "") -> None:
        locale = session["locale"] or self.services.settings.default_locale
        await ws.send_json({"type": "error", "text": t("bad_frame", locale), "reply_to": reply_to})

    async def _frame(self, ws: web.WebSocketResponse, session: dict[str, Any], data: str) -> None:
        try:
            frame = json.loads(data)
        except ValueError:
            frame = None
        if not isinstance(frame, dict) or frame.get("type") not in ("hello", "message", "action"):
            await self._bad_frame(ws, session)
            return
        if self.tasks.closing:
            return
        if frame["type"] == "hello":
            visitor = str(frame.get("visitor") or "")
            if ID_RE.match(visitor):
                session["visitor"] = visitor
            session["locale"] = normalize_locale(str(frame.get("locale") or "")) or None
            name = frame.get("name")
            session["name"] = str(name)[:80] if isinstance(name, str) and name.strip() else None
            locale = session["locale"] or self.services.settings.default_locale
            await ws.send_json({
                "type": "welcome", "locale": locale, "visitor": session["visitor"],
                "commands": self.services.router.schema(locale),
                "limits": {"max_upload_bytes": self.services.settings.limits.max_upload_bytes},
            })
            return
        client_id = str(frame.get("id") or "")
        if not ID_RE.match(client_id):
            client_id = uuid.uuid4().hex
        try:
            event = await self._event(session, frame, client_id)
        except (TypeError, ValueError, KeyError):
            await self._bad_frame(ws, session, client_id)
            return
        except UnsupportedInput as e:
            locale = session["locale"] or self.services.settings.default_locale
            await ws.send_json({"type": "error", "text": t(e.key, locale, **e.params), "reply_to": client_id})
            return
        settings = self.services.settings.responder
        responder = WebResponder(ws, self.services, client_id, None, settings.stream_interval_s,
                                 settings.progress_interval_s)
        self.tasks.spawn(self.dispatch(event, responder), name=f"web:{client_id}")

    async def _event(self, session: dict[str, Any], frame: dict[str, Any], client_id: str) -> IncomingEvent:
        visitor = session["visitor"]
        common: dict[str, Any] = dict(
            platform="web", event_id=client_id, workspace_id=WORKSPACE, channel_id=f"dm-{visitor}",
            user_id=visitor, user_name=session["name"], locale=session["locale"], is_dm=True,
        )
        if frame["type"] == "action":
            return IncomingEvent(kind=EventKind.ACTION, action_id=str(frame["action_id"]),
                                 action_value=str(frame.get("value") or ""), raw=frame, **common)
        text = frame.get("text") or ""
        ids = frame.get("attachments") or []
        if not isinstance(text, str) or not isinstance(ids, list):
            raise TypeError("bad message frame")
        attachments = tuple([await self._attachment(str(i)) for i in ids[:10]])
        parsed = split_command(text)
        if parsed:
            return IncomingEvent(kind=EventKind.COMMAND, command=parsed[0], text=parsed[1],
                                 attachments=attachments, raw=frame, **common)
        return IncomingEvent(kind=kind_for_attachments(attachments), text=text, attachments=attachments,
                             raw=frame, **common)

    async def _attachment(self, upload_id: str) -> Attachment:
        if not upload_id.isdigit():
            raise ValueError("bad upload id")
        blob = await self.services.store.blobs.get(int(upload_id))
        if blob is None:
            raise UnsupportedInput("upload_missing")
        store = self.services.store

        async def fetch(limit: int) -> bytes:
            return await store.blobs.read(blob.id)

        return Attachment(name=blob.name, mime=blob.mime, size=blob.size, fetch=fetch,
                          url=f"/files/{blob.sha256}/{blob.name}")
