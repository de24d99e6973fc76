"""Loopback stand-ins for Slack, spoken to by the real `slack_sdk` / `slack_bolt` clients.

    async with SlackStub() as slack:                      # Web API + Socket Mode, both on 127.0.0.1
        client = AsyncWebClient(token="xoxb-test", base_url=slack.url)
        app = AsyncApp(client=client)                     # client= wins over token= (bolt logs a warning if both)
        handler = AsyncSocketModeHandler(app, "xapp-test")  # reuses app.client, so apps.connections.open hits us
        await handler.connect_async()
        await slack.socket.connected.wait()
        eid = await slack.socket.send_envelope("events_api", event_callback(app_mention("<@UBOT> hi")))
        ack = await slack.socket.wait_ack(eid)
        reply = await slack.wait_for_message("C1")
        await handler.close_async()

`SlackStub` answers `http://127.0.0.1:PORT/api/<method>` like slack.com/api does (200 with `{"ok": false,
"error": ...}` for API errors, 429 + `Retry-After` when rate limited), keeps a small workspace in memory
(users, channels, messages, threads, files) and records every call in `calls` (tokens reduced to their first
five characters). It also serves the v2 upload URLs, `url_private` downloads, `response_url`s and the browser
half of OAuth (`/oauth/v2/authorize`). `SocketModeStub` is the `ws://` endpoint that `apps.connections.open`
hands out: it says `hello`, pushes envelopes and records the client's acks.

Where Slack's exact behaviour is undocumented the stub picks something plausible; those spots say so.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import hashlib
import hmac
import json
import mimetypes
import re
import secrets
import string
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import urlencode

from aiohttp import WSCloseCode, WSMsgType, web
from multidict import MultiDictProxy

JSON = dict[str, Any]
T = TypeVar("T")

TEAM_ID = "T1"
TEAM_NAME = "Stub Team"
TEAM_DOMAIN = "stub-team"
APP_ID = "A0APP"
BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"
BOT_NAME = "teambot"
UPLOAD = "upload_url"  # ApiCall.method of a POST to an upload URL from files.getUploadURLExternal
RESPONSE_URL = "response_url"  # ApiCall.method of a POST to a slash command's or action's response_url
RESPONSE_URL_USES = 5  # Slack: "up to 5 times within 30 minutes"
DEFAULT_BOT_SCOPES = (
    "app_mentions:read,assistant:write,channels:history,channels:read,chat:write,commands,files:read,files:write,"
    "groups:history,groups:read,im:history,im:read,im:write,mpim:history,mpim:read,reactions:write,users:read"
)
DEFAULT_USER_SCOPES = "chat:write,channels:history,users:read"
HISTORY = ("channels:history", "groups:history", "im:history", "mpim:history")
READ = ("channels:read", "groups:read", "im:read", "mpim:read")
NEEDED_SCOPES: dict[str, tuple[str, ...]] = {  # any one of them will do; also sent as x-accepted-oauth-scopes
    "chat.postMessage": ("chat:write",), "chat.update": ("chat:write",), "chat.delete": ("chat:write",),
    "chat.postEphemeral": ("chat:write",), "files.getUploadURLExternal": ("files:write",),
    "files.completeUploadExternal": ("files:write",), "files.info": ("files:read",),
    "conversations.replies": HISTORY, "conversations.info": READ, "users.info": ("users:read",),
    "reactions.add": ("reactions:write",), "assistant.threads.setStatus": ("assistant:write", "chat:write"),
}  # fmt: skip
NO_TOKEN_METHODS = frozenset({"oauth.v2.access", "oauth.v2.exchange", "api.test"})
SLACK_HEADERS = {  # what slack.com/api sends besides content-type; x-slack-req-id and the scope headers are added
    "x-slack-backend": "r",
    "x-slack-edge-shared-secret-outcome": "no-match",
    "access-control-allow-origin": "*",
    "access-control-allow-headers": "slack-route, x-slack-version-ts, x-b3-traceid, x-b3-spanid, x-b3-parentspanid,"
    " x-b3-sampled, x-b3-flags",
    "access-control-expose-headers": "x-slack-req-id, retry-after",
    "cache-control": "private, no-cache, no-store, must-revalidate",
    "expires": "Sat, 26 Jul 1997 05:00:00 GMT",
    "pragma": "no-cache",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "x-xss-protection": "0",
    "vary": "Accept-Encoding",
}
_ID_CHARS = string.ascii_uppercase + string.digits


def new_id(prefix: str, length: int = 10) -> str:
    """A Slack-looking id: `new_id("F")` -> "F07QX2M4TZK"."""
    return prefix + "".join(secrets.choice(_ID_CHARS) for _ in range(length))


class TsClock:
    """Slack message timestamps ("1712345678.123456"): wall-clock based, strictly increasing."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> str:
        micros = max(int(time.time() * 1_000_000), self._last + 1)
        self._last = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


_clock = TsClock()


def next_ts() -> str:
    """A fresh message timestamp, later than every one handed out before in this process."""
    return _clock.next()


# -- payload builders ---------------------------------------------------------------------------------------------


def sign(body: bytes | str, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack signs an HTTP request with: HMAC-SHA256 of `v0:{timestamp}:{body}` under the secret."""
    ts = int(time.time()) if timestamp is None else timestamp
    raw = body if isinstance(body, bytes) else body.encode()
    digest = hmac.new(secret.encode(), b"v0:" + str(ts).encode() + b":" + raw, hashlib.sha256).hexdigest()
    return {"X-Slack-Signature": f"v0={digest}", "X-Slack-Request-Timestamp": str(ts)}


def form_body(fields: Mapping[str, Any]) -> bytes:
    """An `application/x-www-form-urlencoded` body, as Slack POSTs slash commands over HTTP."""
    return urlencode({k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}).encode()


def interactive_body(payload: JSON) -> bytes:
    """Interactivity over HTTP: the payload JSON in a single `payload` form field."""
    return urlencode({"payload": json.dumps(payload)}).encode()


def rich_text(text: str) -> list[JSON]:
    """The `blocks` Slack attaches to a typed user message (one rich_text section; mentions stay literal)."""
    return [{"type": "rich_text", "block_id": new_id("b", 4).lower(),
             "elements": [{"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}]}]  # fmt: skip


def message_event(
    text: str, *, user: str = "U1", channel: str = "C1", ts: str | None = None, thread_ts: str | None = None,
    channel_type: str | None = None, team: str = TEAM_ID, files: list[JSON] | None = None, **extra: Any,
) -> JSON:
    """A `message` event as a user typed it (`channel_type` "channel", "group", "im" or "mpim")."""
    ts = ts or next_ts()
    kind = channel_type or {"D": "im", "G": "group"}.get(channel[:1], "channel")
    event: JSON = {"type": "message", "user": user, "text": text, "ts": ts, "team": team,
                   "blocks": rich_text(text), "channel": channel, "event_ts": ts, "channel_type": kind,
                   "client_msg_id": str(uuid.uuid4())}  # fmt: skip
    if thread_ts:
        event["thread_ts"] = thread_ts
        event["parent_user_id"] = extra.pop("parent_user_id", user)
    if files:
        event["files"] = files
        event["upload"] = False
        event["subtype"] = "file_share"
    event.update(extra)
    return event


def app_mention(
    text: str, *, user: str = "U1", channel: str = "C1", ts: str | None = None, thread_ts: str | None = None,
    team: str = TEAM_ID, **extra: Any,
) -> JSON:
    """An `app_mention` event; `text` should contain `<@UBOT>` as Slack delivers it."""
    ts = ts or next_ts()
    event: JSON = {"type": "app_mention", "user": user, "text": text, "ts": ts, "team": team,
                   "blocks": rich_text(text), "channel": channel, "event_ts": ts,
                   "client_msg_id": str(uuid.uuid4())}  # fmt: skip
    if thread_ts:
        event["thread_ts"] = thread_ts
    event.update(extra)
    return event


def event_callback(
    event: JSON, *, team: str = TEAM_ID, event_id: str | None = None, app_id: str = APP_ID,
    bot_user_id: str = BOT_USER_ID, event_time: int | None = None,
) -> JSON:
    """The Events API body (`type: event_callback`) around one event, as Socket Mode's `events_api` payload or
    an HTTP POST body."""
    return {
        "token": "verification-token-unused",
        "team_id": team,
        "context_team_id": team,
        "context_enterprise_id": None,
        "api_app_id": app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or new_id("Ev"),
        "event_time": event_time if event_time is not None else int(time.time()),
        "authorizations": [{"enterprise_id": None, "team_id": team, "user_id": bot_user_id, "is_bot": True,
                            "is_enterprise_install": False}],
        "is_ext_shared_channel": False,
        "event_context": "4-" + base64.urlsafe_b64encode(json.dumps({"et": event.get("type")}).encode()).decode(),
    }


# -- records ------------------------------------------------------------------------------------------------------


@dataclass
class ApiCall:
    """One request as the stand-in saw it. Tokens are never kept: `token` is the first 5 characters or None."""

    method: str  # "chat.postMessage", or UPLOAD / RESPONSE_URL
    params: JSON  # query merged with the JSON or form body (JSON-valued form fields stay strings)
    token: str | None
    files: dict[str, bytes] = field(default_factory=dict)  # uploaded bytes by filename
    http_method: str = "POST"
    status: int = 200
    error: str | None = None  # the `error` of an `ok: false` answer
    at: float = field(default_factory=time.monotonic)


@dataclass
class StoredFile:
    """A file known to the stand-in: uploaded through the v2 flow or planted with `add_file`."""

    id: str
    name: str
    title: str
    mimetype: str
    content: bytes = b""
    length: int | None = None  # as declared to files.getUploadURLExternal
    uploaded: bool = False  # bytes POSTed to the upload URL
    completed: bool = False  # files.completeUploadExternal done (or planted)
    forbidden: bool = False  # url_private always answers 403
    user: str = BOT_USER_ID
    team: str = TEAM_ID
    created: int = field(default_factory=lambda: int(time.time()))
    channel_id: str | None = None
    thread_ts: str | None = None
    initial_comment: str | None = None
    alt_txt: str | None = None
    shares: dict[str, list[JSON]] = field(default_factory=dict)  # channel -> [{"ts", "thread_ts"?}]


@dataclass
class ResponsePost:
    """One POST to a `response_url`, with what it answered for."""

    url: str
    kind: str  # "commands" or "actions"
    body: JSON
    context: JSON  # team, channel, user, message_ts (actions)
    at: float = field(default_factory=time.monotonic)


@dataclass
class Identity:
    """Who a token is."""

    team_id: str
    team_name: str
    user_id: str
    user_name: str
    bot_id: str | None
    scopes: str
    app_id: str = APP_ID


@dataclass
class AckRecord:
    """An acknowledgement frame a Socket Mode client sent."""

    envelope_id: str
    received_at_monotonic: float
    payload: JSON | None
    frame: JSON
    sent_at_monotonic: float | None = None  # when the envelope went out, if it came from this stand-in

    @property
    def latency_s(self) -> float | None:
        return None if self.sent_at_monotonic is None else self.received_at_monotonic - self.sent_at_monotonic


@dataclass
class Delivery:
    """One envelope pushed to a Socket Mode client."""

    envelope_id: str
    type: str
    payload: JSON
    retry_attempt: int
    retry_reason: str
    sent_at_monotonic: float


@dataclass
class _Failure:
    status: int
    retry_after: int | None
    error: str
    times: int


class ApiError(Exception):
    """An `{"ok": false, "error": ...}` answer; raise it from a method handler."""

    def __init__(self, error: str, status: int = 200, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.extra = extra


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true")


def _json_param(value: Any) -> Any:
    """Blocks, attachments and file lists arrive as JSON strings in form or query fields."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise ApiError("invalid_arguments") from e
    return value


def _offset_cursor(offset: int) -> str:
    return base64.b64encode(f"offset:{offset}".encode()).decode()


def _cursor_offset(cursor: str) -> int:
    try:
        return int(base64.b64decode(cursor).decode().split(":", 1)[1])
    except (ValueError, IndexError, binascii.Error) as e:
        raise ApiError("invalid_cursor") from e


# -- Socket Mode --------------------------------------------------------------------------------------------------


@dataclass
class _Link:
    ws: web.WebSocketResponse
    request: web.Request
    app_id: str


class SocketModeStub:
    """The WebSocket side of Socket Mode at `ws://127.0.0.1:PORT/link/?ticket=...&app_id=...`.

    Only URLs from `issue_url` (what apps.connections.open returns) are accepted (401 otherwise). On connect
    it sends `hello`; envelopes go to the newest open connection. With `redeliver_after_s`, an unacknowledged
    `events_api` envelope is sent again (new envelope_id, same payload, retry_attempt + 1, retry_reason
    "timeout") up to `max_redeliveries` times, like Slack's Events API retries (which are far slower)."""

    def __init__(
        self, *, redeliver_after_s: float | None = None, max_redeliveries: int = 3, single_use_tickets: bool = False,
    ) -> None:
        self.url = ""  # ws://127.0.0.1:PORT/link/
        self.redeliver_after_s = redeliver_after_s
        self.max_redeliveries = max_redeliveries
        self.single_use_tickets = single_use_tickets
        self.connected = asyncio.Event()  # set while at least one client connection is open
        self.connections = 0  # accepted connections so far
        self.rejected = 0  # handshakes refused (unknown or reused ticket)
        self.acks: dict[str, AckRecord] = {}
        self.deliveries: list[Delivery] = []
        self.frames: list[JSON] = []  # every text frame clients sent, parsed
        self.tickets: dict[str, int] = {}  # ticket -> times used
        self._ticket_apps: dict[str, str] = {}
        self._links: list[_Link] = []
        self._ack_events: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None

    @property
    def started(self) -> bool:
        return self._runner is not None

    @property
    def open_connections(self) -> int:
        return sum(not link.ws.closed for link in self._links)

    async def start(self) -> SocketModeStub:
        app = web.Application()
        app.router.add_get("/link/", self._link)
        app.router.add_get("/link", self._link)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"ws://{host}:{port}/link/"
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.disconnect(abrupt=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SocketModeStub:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def issue_url(self, app_id: str = APP_ID) -> str:
        """A fresh connection URL, as apps.connections.open returns."""
        ticket = str(uuid.uuid4())
        self.tickets[ticket] = 0
        self._ticket_apps[ticket] = app_id
        return f"{self.url}?ticket={ticket}&app_id={app_id}"

    async def send_envelope(
        self, type: str, payload: JSON, *, envelope_id: str | None = None, retry_attempt: int = 0,
        retry_reason: str = "", accepts_response_payload: bool | None = None, timeout: float = 5.0,
    ) -> str:
        """Push one envelope (`events_api`, `slash_commands` or `interactive`), waiting up to `timeout` for a
        connection. `accepts_response_payload` defaults as Slack's: true for slash commands and for view
        submissions / block suggestions, false otherwise. Returns the envelope_id."""
        envelope_id = envelope_id or str(uuid.uuid4())
        if accepts_response_payload is None:
            accepts_response_payload = type == "slash_commands" or (
                type == "interactive" and payload.get("type") in ("view_submission", "block_suggestion"))
        frame: JSON = {"envelope_id": envelope_id, "payload": payload, "type": type,
                       "accepts_response_payload": accepts_response_payload}  # fmt: skip
        if type == "events_api":
            frame["retry_attempt"] = retry_attempt
            frame["retry_reason"] = retry_reason
        delivery = Delivery(envelope_id, type, payload, retry_attempt, retry_reason, time.monotonic())
        self.deliveries.append(delivery)  # before sending: the ack can arrive before send_frame returns
        try:
            await self.send_frame(frame, timeout=timeout)
        except BaseException:
            self.deliveries.remove(delivery)
            raise
        delivery.sent_at_monotonic = time.monotonic()
        if type == "events_api" and self.redeliver_after_s is not None and retry_attempt < self.max_redeliveries:
            task = asyncio.get_running_loop().create_task(self._redeliver(envelope_id, payload, retry_attempt))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return envelope_id

    async def send_frame(self, frame: JSON, *, timeout: float = 5.0) -> None:
        """Send any JSON frame on the newest open connection (waiting up to `timeout` for one)."""
        deadline = time.monotonic() + timeout
        while True:
            open_links = [link for link in self._links if not link.ws.closed]
            if open_links:
                try:
                    await open_links[-1].ws.send_str(json.dumps(frame))
                    return
                except (ConnectionError, RuntimeError):
                    pass  # closing under us: try the next one
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no Socket Mode client is connected")
            await asyncio.sleep(min(0.01, remaining))

    async def wait_ack(self, envelope_id: str, timeout: float = 5.0) -> JSON:
        """The ack frame the client sent for this envelope, plus `received_at_monotonic`."""
        await asyncio.wait_for(self._ack_events[envelope_id].wait(), timeout)
        record = self.acks[envelope_id]
        return {**record.frame, "received_at_monotonic": record.received_at_monotonic}

    def unacked(self) -> list[Delivery]:
        """Deliveries the client has not acknowledged."""
        return [d for d in self.deliveries if d.envelope_id not in self.acks]

    async def request_refresh(self, reason: str = "refresh_requested") -> None:
        """Slack's advance notice (`{"type": "disconnect", "reason": ...}`) that this connection will go away;
        the SDK answers it by opening a new connection at once. Reasons: refresh_requested, warning,
        link_disabled (the last one the SDK also just reconnects on)."""
        await self.send_frame({"type": "disconnect", "reason": reason,
                               "debug_info": {"host": "applink-stub"}})  # fmt: skip

    async def disconnect(self, *, abrupt: bool = False) -> None:
        """Drop every connection: a close frame (the SDK reconnects at once through apps.connections.open) or,
        with `abrupt`, a reset TCP connection (the SDK notices within about `ping_interval` seconds)."""
        links, self._links = self._links, []
        self.connected.clear()
        for link in links:
            if abrupt:
                if link.request.transport is not None:
                    link.request.transport.abort()
            else:
                await link.ws.close(code=WSCloseCode.GOING_AWAY, message=b"disconnect")

    async def _link(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self.tickets or (self.single_use_tickets and self.tickets[ticket] > 0):
            self.rejected += 1
            return web.Response(status=401, text="invalid ticket")
        self.tickets[ticket] += 1
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        link = _Link(ws, request, self._ticket_apps.get(ticket, APP_ID))
        self._links.append(link)
        self.connections += 1
        await ws.send_str(json.dumps({
            "type": "hello", "num_connections": self.open_connections,
            "debug_info": {"host": "applink-stub", "build_number": 1, "approximate_connection_time": 18060},
            "connection_info": {"app_id": link.app_id},
        }))  # fmt: skip
        self.connected.set()
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._on_frame(message.data)
        finally:
            if link in self._links:
                self._links.remove(link)
            if not any(not other.ws.closed for other in self._links):
                self.connected.clear()
        return ws

    def _on_frame(self, data: str) -> None:
        try:
            frame = json.loads(data)
        except json.JSONDecodeError:
            return
        if not isinstance(frame, dict):
            return
        self.frames.append(frame)
        envelope_id = frame.get("envelope_id")
        if isinstance(envelope_id, str) and envelope_id not in self.acks:
            sent = next((d.sent_at_monotonic for d in self.deliveries if d.envelope_id == envelope_id), None)
            self.acks[envelope_id] = AckRecord(envelope_id, time.monotonic(), frame.get("payload"), frame, sent)
            self._ack_events[envelope_id].set()

    async def _redeliver(self, envelope_id: str, payload: JSON, attempt: int) -> None:
        assert self.redeliver_after_s is not None
        await asyncio.sleep(self.redeliver_after_s)
        if envelope_id not in self.acks:
            try:
                await self.send_envelope("events_api", payload, retry_attempt=attempt + 1, retry_reason="timeout")
            except TimeoutError:
                pass  # nobody connected: Slack would give up too


# -- Web API ------------------------------------------------------------------------------------------------------


Handler = Callable[[JSON, Identity], JSON]


class SlackStub:
    """Slack's Web API at `url` ("http://127.0.0.1:PORT/api/"), with a Socket Mode stand-in in `socket`.

    Tokens: any `xoxb-` token is the bot UBOT/BBOT in T1 (`xoxp-` ones are user U1) unless it came from
    oauth.v2.access or was revoked with `revoke`. apps.connections.open wants an `xapp-` token; the other
    methods answer `not_allowed_token_type` to one. With `strict_channels`, unknown channel ids are
    `channel_not_found`; otherwise they spring into being as public channels."""

    def __init__(
        self, *, socket: SocketModeStub | None = None, strict_channels: bool = False,
        bot_scopes: str = DEFAULT_BOT_SCOPES, client_id: str | None = None, client_secret: str | None = None,
        unauthorized_download: Literal["forbidden", "login_page"] = "forbidden",
    ) -> None:
        self.url = ""  # http://127.0.0.1:PORT/api/
        self.base = ""  # http://127.0.0.1:PORT
        self.socket = socket or SocketModeStub()
        self._owns_socket = False
        self.strict_channels = strict_channels
        self.bot_scopes = bot_scopes
        self.client_id = client_id
        self.client_secret = client_secret
        self.unauthorized_download = unauthorized_download
        self.calls: list[ApiCall] = []
        self.messages: defaultdict[str, list[JSON]] = defaultdict(list)  # channel -> every message, threads too
        self.edits: dict[tuple[str, str], list[JSON]] = {}  # (channel, ts) -> earlier versions, oldest first
        self.deleted: list[JSON] = []  # messages removed by chat.delete, each with its "channel"
        self.ephemerals: list[JSON] = []  # chat.postEphemeral and ephemeral response_url posts
        self.statuses: list[JSON] = []  # assistant.threads.setStatus params
        self.files: dict[str, StoredFile] = {}
        self.users: dict[str, JSON] = {}
        self.channels: dict[str, JSON] = {}
        self.replies: dict[tuple[str, str], list[JSON]] = {}  # (channel, thread_ts) -> parent first, then replies
        self.response_posts: list[ResponsePost] = []
        self.downloads: list[tuple[str, bool, int]] = []  # (file_id, had a valid token, status)
        self.installs: list[JSON] = []  # oauth.v2.access answers
        self.authorize_requests: list[dict[str, str]] = []  # /oauth/v2/authorize queries
        self.latency_s: dict[str, float] = {}  # method -> delay before answering
        self.revoked: set[str] = set()
        self._tokens: dict[str, Identity] = {}
        self._codes: dict[str, JSON] = {}
        self._used_codes: set[str] = set()
        self._failures: dict[str, list[_Failure]] = defaultdict(list)
        self._uploads: dict[str, str] = {}  # upload key -> file id
        self._response_urls: dict[str, JSON] = {}  # path -> context
        self._response_url_uses: dict[str, int] = defaultdict(int)
        self._runner: web.AppRunner | None = None
        self._handlers: dict[str, Handler] = {
            "api.test": lambda p, i: {"args": p},
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.delete": self._delete,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.getPermalink": self._permalink,
            "reactions.add": self._reactions_add,
            "assistant.threads.setStatus": self._set_status,
            "files.getUploadURLExternal": self._get_upload_url,
            "files.completeUploadExternal": self._complete_upload,
            "files.info": self._files_info,
            "files.upload": self._files_upload_v1,
            "conversations.replies": self._replies,
            "conversations.info": self._conversations_info,
            "users.info": self._users_info,
            "apps.connections.open": self._connections_open,
            "oauth.v2.access": self._oauth_v2_access,
        }
        self._seed()

    def _seed(self) -> None:
        self.add_user("U1", "alice", real_name="Alice Example", locale="en-US", tz="Europe/London")
        self.add_user("U2", "bob", real_name="Bob Example", locale="de-DE", tz="Europe/Berlin")
        self.add_user(BOT_USER_ID, BOT_NAME, real_name="Team Bot", is_bot=True, bot_id=BOT_ID)
        self.add_channel("C1", "general", is_general=True)
        self.add_channel("C2", "random")
        self.add_channel("G1", "secret", is_private=True)
        self.add_channel("D1", "", is_im=True, user="U1")

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self) -> SlackStub:
        if not self.socket.started:
            await self.socket.start()
            self._owns_socket = True
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/v1/{key}", self._upload)
        app.router.add_get("/files-pri/{team_file}/{name}", self._download)
        app.router.add_get("/files-pri/{team_file}/download/{name}", self._download)
        app.router.add_post("/commands/{team}/{n}/{secret}", self._response_url)
        app.router.add_post("/actions/{team}/{n}/{secret}", self._response_url)
        app.router.add_get("/oauth/v2/authorize", self._authorize)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"
        self.url = f"{self.base}/api/"
        return self

    async def stop(self) -> None:
        if self._owns_socket:
            await self.socket.stop()
            self._owns_socket = False
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SlackStub:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- test controls ------------------------------------------------------------------------------------------

    def fail_next(
        self, method: str, status: int = 429, retry_after: int | None = 1, error: str = "ratelimited", times: int = 1,
    ) -> None:
        """The next `times` calls to `method` fail: status 429 sends `Retry-After` (whole seconds, as Slack
        does) and `{"ok": false, "error": "ratelimited"}`; status 200 sends `{"ok": false, "error": error}`;
        other statuses send that status with the same body. `method` may be UPLOAD or RESPONSE_URL."""
        self._failures[method].append(_Failure(status, retry_after, error, times))

    def calls_to(self, method: str) -> list[ApiCall]:
        return [call for call in self.calls if call.method == method]

    def revoke(self, token: str) -> None:
        """From now on this token gets `token_revoked` (and 403 on downloads)."""
        self.revoked.add(token)

    def add_user(
        self, user_id: str, name: str, *, real_name: str | None = None, locale: str = "en-US",
        tz: str = "America/Los_Angeles", is_bot: bool = False, bot_id: str | None = None, team: str = TEAM_ID,
        **extra: Any,
    ) -> JSON:
        real = real_name or name.title()
        user: JSON = {
            "id": user_id, "team_id": team, "name": name, "deleted": False, "color": "9f69e7", "real_name": real,
            "tz": tz, "tz_label": tz, "tz_offset": 0, "is_admin": False, "is_owner": False,
            "is_primary_owner": False, "is_restricted": False, "is_ultra_restricted": False, "is_bot": is_bot,
            "is_app_user": False, "updated": int(time.time()), "is_email_confirmed": not is_bot,
            "who_can_share_contact_card": "EVERYONE", "locale": locale,
            "profile": {"title": "", "phone": "", "skype": "", "real_name": real, "real_name_normalized": real,
                        "display_name": name, "display_name_normalized": name, "fields": None, "status_text": "",
                        "status_emoji": "", "status_expiration": 0, "avatar_hash": "g0000000000",
                        "email": None if is_bot else f"{name}@example.com", "first_name": real.split()[0],
                        "last_name": " ".join(real.split()[1:]),
                        "image_72": f"https://avatars.slack-edge.com/stub/{user_id}_72.png",
                        "team": team, **({"bot_id": bot_id} if bot_id else {})},
            **extra,
        }  # fmt: skip
        self.users[user_id] = user
        return user

    def add_channel(
        self, channel_id: str, name: str, *, is_private: bool = False, is_im: bool = False, is_general: bool = False,
        user: str | None = None, locale: str = "en-US", **extra: Any,
    ) -> JSON:
        now = int(time.time())
        channel: JSON = {"id": channel_id, "created": now, "is_archived": False, "is_org_shared": False,
                         "context_team_id": TEAM_ID, "updated": now * 1000, "locale": locale, **extra}  # fmt: skip
        if is_im:
            channel.update({"is_im": True, "user": user or "U1", "is_user_deleted": False, "priority": 0,
                            "is_open": True})  # fmt: skip
        else:
            channel.update({
                "name": name, "name_normalized": name, "is_channel": not is_private, "is_group": is_private,
                "is_im": False, "is_mpim": False, "is_private": is_private, "is_general": is_general,
                "is_shared": False, "is_ext_shared": False, "is_pending_ext_shared": False, "is_member": True,
                "creator": "U1", "topic": {"value": "", "creator": "", "last_set": 0},
                "purpose": {"value": "", "creator": "", "last_set": 0}, "previous_names": [],
            })  # fmt: skip
        self.channels[channel_id] = channel
        return channel

    def add_message(
        self, channel: str, text: str, *, user: str = "U1", ts: str | None = None, thread_ts: str | None = None,
        **extra: Any,
    ) -> JSON:
        """Plant a message someone typed (e.g. the one an event is about), so threads and edits can find it."""
        message: JSON = {"type": "message", "user": user, "text": text, "ts": ts or next_ts(), "team": TEAM_ID,
                         "blocks": rich_text(text), "client_msg_id": str(uuid.uuid4()), **extra}  # fmt: skip
        self._store_message(channel, message, thread_ts)
        return message

    def add_file(
        self, name: str, content: bytes, mimetype: str | None = None, *, forbidden: bool = False, user: str = "U1",
        title: str | None = None, channel: str | None = None,
    ) -> JSON:
        """Plant a file (as a user upload) and return its file object; `url_private` serves the bytes to a valid
        bearer token, or always 403 when `forbidden`."""
        stored = StoredFile(id=new_id("F"), name=name, title=title or name,
                            mimetype=mimetype or mimetypes.guess_type(name)[0] or "application/octet-stream",
                            content=content, length=len(content), uploaded=True, completed=True,
                            forbidden=forbidden, user=user, channel_id=channel)  # fmt: skip
        self.files[stored.id] = stored
        return self.file_object(stored)

    def issue_oauth_code(
        self, *, team_id: str = "T2", team_name: str = "Installed Team", user_id: str = "U1",
        bot_user_id: str = BOT_USER_ID, bot_id: str = BOT_ID, scope: str | None = None,
        user_scope: str | None = None,
    ) -> str:
        """A code oauth.v2.access will accept once, installing into that team. (Codes not issued here are also
        accepted once, for T2.)"""
        code = f"{int(time.time())}.{secrets.token_hex(6)}"
        self._codes[code] = {"team_id": team_id, "team_name": team_name, "user_id": user_id,
                             "bot_user_id": bot_user_id, "bot_id": bot_id, "scope": scope or self.bot_scopes,
                             "user_scope": user_scope}  # fmt: skip
        return code

    def slash_command(
        self, command: str, text: str = "", *, user: str = "U1", channel: str = "C1", team: str = TEAM_ID,
    ) -> dict[str, str]:
        """The form fields of a slash command (Socket Mode payload as is; `form_body()` for HTTP), with a
        response_url on this server."""
        channel_name = self.channels.get(channel, {}).get("name") or ("directmessage" if channel[:1] == "D" else "")
        return {
            "token": "verification-token-unused", "team_id": team, "team_domain": TEAM_DOMAIN,
            "channel_id": channel, "channel_name": channel_name, "user_id": user,
            "user_name": self.users.get(user, {}).get("name", user.lower()), "command": command, "text": text,
            "api_app_id": APP_ID, "is_enterprise_install": "false",
            "response_url": self._new_response_url("commands", team, channel=channel, user=user),
            "trigger_id": self._trigger_id(),
        }  # fmt: skip

    def block_action(
        self, action_id: str, value: str, *, user: str = "U1", channel: str = "C1", message_ts: str | None = None,
        team: str = TEAM_ID, block_id: str | None = None, text: str = "Button", message: JSON | None = None,
    ) -> JSON:
        """A `block_actions` payload for a button click on a message (Socket Mode `interactive` payload as is;
        `interactive_body()` for HTTP), with a response_url on this server."""
        if message is None and message_ts is not None:
            message = self._find_message(channel, message_ts)
        message_ts = message_ts or (message or {}).get("ts") or next_ts()
        block_id = block_id or new_id("", 5).lower()
        user_name = self.users.get(user, {}).get("name", user.lower())
        return {
            "type": "block_actions",
            "user": {"id": user, "username": user_name, "name": user_name, "team_id": team},
            "api_app_id": APP_ID, "token": "verification-token-unused",
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False},
            "trigger_id": self._trigger_id(), "team": {"id": team, "domain": TEAM_DOMAIN}, "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": self.channels.get(channel, {}).get("name", "")},
            "message": copy.deepcopy(message) if message else {"type": "message", "user": BOT_USER_ID,
                                                                  "ts": message_ts, "bot_id": BOT_ID, "text": ""},
            "state": {"values": {}},
            "response_url": self._new_response_url("actions", team, channel=channel, user=user,
                                                   message_ts=message_ts),
            "actions": [{"action_id": action_id, "block_id": block_id, "text": {"type": "plain_text", "text": text,
                         "emoji": True}, "value": value, "type": "button", "action_ts": next_ts()}],
        }  # fmt: skip

    def event_callback(self, event: JSON, *, team: str = TEAM_ID, event_id: str | None = None) -> JSON:
        return event_callback(event, team=team, event_id=event_id)

    def edit_history(self, channel: str, ts: str) -> list[JSON]:
        """Earlier versions of a message, oldest first (empty if never edited)."""
        return self.edits.get((channel, ts), [])

    async def wait_for_call(self, method: str, count: int = 1, timeout: float = 5.0) -> list[ApiCall]:
        """Wait until `method` has been called `count` times; returns those calls."""
        def probe() -> list[ApiCall] | None:
            calls = self.calls_to(method)
            return calls[:count] if len(calls) >= count else None

        return await self._wait(probe, timeout)

    async def wait_for_message(
        self, channel: str, where: Callable[[JSON], bool] | None = None, timeout: float = 5.0,
    ) -> JSON:
        """Wait for a message in `channel` (matching `where`, default any by the bot) and return it."""
        match = where or (lambda m: m.get("user") == BOT_USER_ID)
        return await self._wait(lambda: next((m for m in self.messages.get(channel, []) if match(m)), None), timeout)

    @staticmethod
    async def _wait(probe: Callable[[], T | None], timeout: float) -> T:
        deadline = time.monotonic() + timeout
        while (found := probe()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time")
            await asyncio.sleep(0.01)
        return found

    def file_object(self, stored: StoredFile) -> JSON:
        """The file object Slack returns for a file (files.info, completeUploadExternal, events)."""
        url = f"{self.base}/files-pri/{stored.team}-{stored.id}/{stored.name}"
        ext = stored.name.rsplit(".", 1)[-1].lower() if "." in stored.name else "binary"
        public = {ch: s for ch, s in stored.shares.items() if ch[:1] == "C"}
        private = {ch: s for ch, s in stored.shares.items() if ch[:1] != "C"}
        obj: JSON = {
            "id": stored.id, "created": stored.created, "timestamp": stored.created, "name": stored.name,
            "title": stored.title, "mimetype": stored.mimetype, "filetype": ext, "pretty_type": ext.upper(),
            "user": stored.user, "user_team": stored.team, "editable": False,
            "size": len(stored.content) if stored.uploaded else (stored.length or 0), "mode": "hosted",
            "is_external": False, "external_type": "", "is_public": bool(public), "public_url_shared": False,
            "display_as_bot": False, "username": "", "url_private": url,
            "url_private_download": f"{self.base}/files-pri/{stored.team}-{stored.id}/download/{stored.name}",
            "permalink": f"https://{TEAM_DOMAIN}.slack.com/files/{stored.user}/{stored.id}/{stored.name}",
            "permalink_public": f"https://slack-files.com/{stored.team}-{stored.id}-{secrets.token_hex(5)}",
            "comments_count": 0, "is_starred": False, "has_rich_preview": False, "file_access": "visible",
            "channels": [ch for ch in public], "groups": [ch for ch in private if ch[:1] == "G"],
            "ims": [ch for ch in private if ch[:1] == "D"], "shares": {},
        }  # fmt: skip
        if public:
            obj["shares"]["public"] = public
        if private:
            obj["shares"]["private"] = private
        if stored.alt_txt:
            obj["alt_txt"] = stored.alt_txt
        return obj

    # -- plumbing -----------------------------------------------------------------------------------------------

    def _identity(self, token: str) -> Identity:
        if token in self.revoked:
            raise ApiError("token_revoked")
        if token in self._tokens:
            return self._tokens[token]
        if token.startswith("xoxb-"):
            return Identity(TEAM_ID, TEAM_NAME, BOT_USER_ID, BOT_NAME, BOT_ID, self.bot_scopes)
        if token.startswith("xoxp-"):
            return Identity(TEAM_ID, TEAM_NAME, "U1", "alice", None, DEFAULT_USER_SCOPES)
        if token.startswith("xapp-"):
            return Identity(TEAM_ID, TEAM_NAME, "", "", None, "connections:write")
        raise ApiError("invalid_auth")

    def _take_failure(self, method: str) -> _Failure | None:
        queue = self._failures.get(method)
        if not queue:
            return None
        failure = queue[0]
        failure.times -= 1
        if failure.times <= 0:
            queue.pop(0)
        return failure

    def _failure_response(self, failure: _Failure, call: ApiCall, headers: dict[str, str]) -> web.Response:
        error = "ratelimited" if failure.status == 429 else failure.error
        if failure.status == 429 and failure.retry_after is not None:
            headers["Retry-After"] = str(failure.retry_after)
        call.status, call.error = failure.status, error
        return web.json_response({"ok": False, "error": error}, status=failure.status, headers=headers)

    @staticmethod
    async def _read_params(request: web.Request) -> tuple[JSON, dict[str, bytes]]:
        params: JSON = dict(request.query)
        files: dict[str, bytes] = {}
        if request.content_type == "application/json":
            body = await request.json() if request.can_read_body else {}
            if isinstance(body, dict):
                params.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form: MultiDictProxy[Any] = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    files[value.filename or key] = value.file.read()
                else:
                    params[key] = value
        return params, files

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        try:
            params, files = await self._read_params(request)
        except ValueError:  # a JSON body that does not parse
            self.calls.append(ApiCall(method, {}, None, {}, request.method, 200, "invalid_json"))
            return web.json_response({"ok": False, "error": "invalid_json"}, headers=dict(SLACK_HEADERS))
        auth = request.headers.get("Authorization", "")
        token: str | None = None
        basic: tuple[str, str] | None = None
        if auth.startswith("Bearer "):
            token = auth[len("Bearer "):].strip()
        elif auth.startswith("Basic "):
            try:
                client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                client_id, secret = "", ""
            basic = (client_id, secret)
        if token is None and isinstance(params.get("token"), str):
            token = params["token"]
        params.pop("token", None)
        if basic is None and "client_id" in params:
            basic = (str(params["client_id"]), str(params.pop("client_secret", "")))
        if basic is not None:
            params["client_id"] = basic[0]
        call = ApiCall(method, params, token[:5] if token else None, files, request.method)
        self.calls.append(call)
        headers = {**SLACK_HEADERS, "x-slack-req-id": secrets.token_hex(16),
                   "x-accepted-oauth-scopes": ",".join(NEEDED_SCOPES.get(method, ()))}  # fmt: skip
        if delay := self.latency_s.get(method):
            await asyncio.sleep(delay)
        if failure := self._take_failure(method):
            return self._failure_response(failure, call, headers)
        status = 200
        try:
            handler = self._handlers.get(method)
            if handler is None:
                raise ApiError("unknown_method", req_method=method)
            identity = self._authorize_call(method, token, basic, headers)
            body = {"ok": True, **handler(params, identity)}
        except ApiError as e:
            body = {"ok": False, "error": e.error, **e.extra}
            status = e.status
            call.error = e.error
        call.status = status
        return web.json_response(body, status=status, headers=headers)

    def _authorize_call(
        self, method: str, token: str | None, basic: tuple[str, str] | None, headers: dict[str, str],
    ) -> Identity:
        if method == "oauth.v2.access":
            client_id, secret = basic or ("", "")
            if not client_id or (self.client_id is not None and client_id != self.client_id):
                raise ApiError("invalid_client_id")
            if self.client_secret is not None and secret != self.client_secret:
                raise ApiError("bad_client_secret")
        if method in NO_TOKEN_METHODS:
            return Identity(TEAM_ID, TEAM_NAME, "", "", None, "")
        if not token:
            raise ApiError("not_authed")
        identity = self._identity(token)
        headers["x-oauth-scopes"] = identity.scopes
        if (method == "apps.connections.open") != token.startswith("xapp-"):
            raise ApiError("not_allowed_token_type")
        needed = NEEDED_SCOPES.get(method)
        granted = set(identity.scopes.split(","))
        if needed and not granted.intersection(needed):
            raise ApiError("missing_scope", needed=",".join(needed), provided=identity.scopes)
        return identity

    def _channel(self, channel_id: Any) -> JSON:
        if not isinstance(channel_id, str) or not channel_id:
            raise ApiError("channel_not_found")
        if channel_id.startswith("#"):  # Slack also takes a channel name
            named = next((c for c in self.channels.values() if c.get("name") == channel_id[1:]), None)
            if named is None:
                raise ApiError("channel_not_found")
            return named
        if channel_id[:1] in "UW" and channel_id in self.users:  # posting to a user id opens the DM
            im = next((c for c in self.channels.values() if c.get("is_im") and c.get("user") == channel_id), None)
            return im or self.add_channel("D" + channel_id[1:], "", is_im=True, user=channel_id)
        if channel_id not in self.channels:
            if self.strict_channels or channel_id[:1] not in "CGD":
                raise ApiError("channel_not_found")
            return self.add_channel(channel_id, channel_id.lower(), is_private=channel_id[:1] == "G",
                                    is_im=channel_id[:1] == "D")  # fmt: skip
        return self.channels[channel_id]

    def _find_message(self, channel: str, ts: str) -> JSON | None:
        return next((m for m in self.messages.get(channel, []) if m.get("ts") == ts), None)

    def _store_message(self, channel: str, message: JSON, thread_ts: str | None) -> None:
        self.messages[channel].append(message)
        if not thread_ts:
            return
        message["thread_ts"] = thread_ts
        thread = self.replies.get((channel, thread_ts))
        parent = self._find_message(channel, thread_ts)
        if thread is None:
            thread = self.replies[(channel, thread_ts)] = [parent] if parent is not None else []
        if message is not parent:
            thread.append(message)
        if parent is not None and message is not parent:
            message.setdefault("parent_user_id", parent.get("user"))
            parent["thread_ts"] = thread_ts
            parent["reply_count"] = parent.get("reply_count", 0) + 1
            parent["reply_users"] = sorted({*parent.get("reply_users", []), message.get("user", "")})
            parent["reply_users_count"] = len(parent["reply_users"])
            parent["latest_reply"] = message["ts"]

    def _bot_message(self, identity: Identity, params: JSON, ts: str) -> JSON:
        message: JSON = {"user": identity.user_id, "type": "message", "ts": ts, "text": params.get("text") or ""}
        if identity.bot_id:
            message.update({"bot_id": identity.bot_id, "app_id": identity.app_id,
                            "bot_profile": {"id": identity.bot_id, "app_id": identity.app_id, "name": BOT_NAME,
                                            "icons": {}, "deleted": False, "updated": int(time.time()),
                                            "team_id": identity.team_id}})  # fmt: skip
        message["team"] = identity.team_id
        for key in ("blocks", "attachments", "metadata"):
            if params.get(key) is not None:
                message[key] = _json_param(params[key])
        self._check_content(message)
        return message

    @staticmethod
    def _check_content(message: JSON) -> None:
        """Slack's limits: 50 blocks, 3000 characters of section text, 40000 characters of text."""
        if len(message.get("text") or "") > 40000:
            raise ApiError("msg_too_long")
        blocks = message.get("blocks")
        if blocks is not None:
            if not isinstance(blocks, list) or len(blocks) > 50:
                raise ApiError("invalid_blocks")
            for block in blocks:
                text = block.get("text") if isinstance(block, dict) else None
                if not isinstance(block, dict) or "type" not in block:
                    raise ApiError("invalid_blocks")
                if block["type"] == "section" and isinstance(text, dict) and len(text.get("text", "")) > 3000:
                    raise ApiError("invalid_blocks")

    # -- methods ------------------------------------------------------------------------------------------------

    def _auth_test(self, params: JSON, identity: Identity) -> JSON:
        body: JSON = {"url": f"https://{TEAM_DOMAIN}.slack.com/", "team": identity.team_name,
                      "user": identity.user_name, "team_id": identity.team_id, "user_id": identity.user_id}
        if identity.bot_id:
            body["bot_id"] = identity.bot_id
        body["is_enterprise_install"] = False
        return body

    def _post_message(self, params: JSON, identity: Identity) -> JSON:
        channel = self._channel(params.get("channel"))
        if not params.get("text") and not params.get("blocks") and not params.get("attachments"):
            raise ApiError("no_text")
        message = self._bot_message(identity, params, next_ts())
        self._store_message(channel["id"], message, params.get("thread_ts") or None)
        if _flag(params.get("reply_broadcast")):
            message["subtype"] = "thread_broadcast"
        return {"channel": channel["id"], "ts": message["ts"], "message": copy.deepcopy(message)}

    def _update(self, params: JSON, identity: Identity) -> JSON:
        channel = self._channel(params.get("channel"))
        message = self._find_message(channel["id"], str(params.get("ts")))
        if message is None:
            raise ApiError("message_not_found")
        if message.get("user") != identity.user_id:
            raise ApiError("cant_update_message")
        self.edits.setdefault((channel["id"], message["ts"]), []).append(copy.deepcopy(message))
        changes: JSON = {k: params[k] for k in ("text", "blocks", "attachments", "metadata") if k in params}
        candidate = {**message, **{k: _json_param(v) if k != "text" else v for k, v in changes.items()}}
        self._check_content(candidate)  # blocks / attachments left out are kept, as Slack does
        message.clear()
        message.update(candidate)
        message["edited"] = {"user": identity.user_id, "ts": next_ts()}
        shown = {k: v for k, v in message.items() if k not in ("ts", "edited")}
        return {"channel": channel["id"], "ts": message["ts"], "text": message.get("text", ""), "message": shown}

    def _delete(self, params: JSON, identity: Identity) -> JSON:
        channel = self._channel(params.get("channel"))
        message = self._find_message(channel["id"], str(params.get("ts")))
        if message is None:
            raise ApiError("message_not_found")
        if message.get("user") != identity.user_id:
            raise ApiError("cant_delete_message")
        self.messages[channel["id"]].remove(message)
        for thread in self.replies.values():
            if message in thread:
                thread.remove(message)
        self.deleted.append({**message, "channel": channel["id"]})
        return {"channel": channel["id"], "ts": message["ts"]}

    def _post_ephemeral(self, params: JSON, identity: Identity) -> JSON:
        channel = self._channel(params.get("channel"))
        if params.get("user") not in self.users:
            raise ApiError("user_not_found")
        if not params.get("text") and not params.get("blocks") and not params.get("attachments"):
            raise ApiError("no_text")
        message = self._bot_message(identity, params, next_ts())
        self.ephemerals.append({**message, "channel": channel["id"], "to_user": params["user"],
                                "thread_ts": params.get("thread_ts")})  # fmt: skip
        return {"message_ts": message["ts"]}

    def _reactions_add(self, params: JSON, identity: Identity) -> JSON:
        channel = self._channel(params.get("channel"))
        message = self._find_message(channel["id"], str(params.get("timestamp")))
        if message is None:
            raise ApiError("message_not_found")
        name = str(params.get("name", "")).strip(":")
        if not name:
            raise ApiError("invalid_name")
        reactions: list[JSON] = message.setdefault("reactions", [])
        reaction = next((r for r in reactions if r["name"] == name), None)
        if reaction is None:
            reactions.append({"name": name, "users": [identity.user_id], "count": 1})
        elif identity.user_id in reaction["users"]:
            raise ApiError("already_reacted")
        else:
            reaction["users"].append(identity.user_id)
            reaction["count"] += 1
        return {}

    def _set_status(self, params: JSON, identity: Identity) -> JSON:
        self._channel(params.get("channel_id"))
        self.statuses.append(dict(params))
        return {}

    def _get_upload_url(self, params: JSON, identity: Identity) -> JSON:
        filename, length = params.get("filename"), params.get("length")
        try:
            declared = int(length) if length is not None else None
        except ValueError as e:
            raise ApiError("invalid_arguments") from e
        if not filename or declared is None or declared < 0:
            raise ApiError("invalid_arguments")
        stored = StoredFile(id=new_id("F"), name=str(filename), title=str(filename),
                            mimetype=mimetypes.guess_type(str(filename))[0] or "application/octet-stream",
                            length=declared, user=identity.user_id, team=identity.team_id,
                            alt_txt=params.get("alt_txt"))  # fmt: skip
        self.files[stored.id] = stored
        key = base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("=")
        self._uploads[key] = stored.id
        return {"upload_url": f"{self.base}/upload/v1/{key}", "file_id": stored.id}

    def _complete_upload(self, params: JSON, identity: Identity) -> JSON:
        entries = _json_param(params.get("files"))
        if not isinstance(entries, list) or not entries:
            raise ApiError("invalid_arguments")
        stored_files: list[StoredFile] = []
        for entry in entries:
            stored = self.files.get(entry.get("id", "")) if isinstance(entry, dict) else None
            if stored is None or not stored.uploaded:  # "not uploaded" has no documented error; this one is a guess
                raise ApiError("file_not_found")
            stored.title = entry.get("title") or stored.title
            stored_files.append(stored)
        channel_ids = [str(params["channel_id"])] if params.get("channel_id") else []
        channel_ids += [c for c in str(params.get("channels") or "").split(",") if c]
        thread_ts = params.get("thread_ts") or None
        if thread_ts and len(channel_ids) != 1:
            raise ApiError("invalid_arguments")
        for stored in stored_files:
            stored.completed = True
            stored.initial_comment = params.get("initial_comment")
            stored.channel_id = channel_ids[0] if channel_ids else None
            stored.thread_ts = thread_ts
        for channel_id in channel_ids:  # Slack shares asynchronously; here the file message exists at once
            channel = self._channel(channel_id)
            message = self._bot_message(identity, {"text": params.get("initial_comment") or ""}, next_ts())
            message.update({"files": [self.file_object(s) for s in stored_files], "upload": True,
                            "display_as_bot": False})  # fmt: skip
            self._store_message(channel["id"], message, thread_ts)
            for stored in stored_files:
                share: JSON = {"ts": message["ts"], "channel_name": channel.get("name", ""), "team_id": TEAM_ID,
                               "share_user_id": identity.user_id, "source": "UNKNOWN"}  # fmt: skip
                if thread_ts:
                    share["thread_ts"] = thread_ts
                stored.shares.setdefault(channel["id"], []).append(share)
        return {"files": [self.file_object(s) for s in stored_files]}

    def _files_info(self, params: JSON, identity: Identity) -> JSON:
        stored = self.files.get(str(params.get("file", "")))
        if stored is None or not stored.completed:
            raise ApiError("file_not_found")
        return {"file": self.file_object(stored), "comments": [], "response_metadata": {"next_cursor": ""}}

    def _files_upload_v1(self, params: JSON, identity: Identity) -> JSON:
        raise ApiError("method_deprecated")  # files.upload is retired; files_upload_v2 is the way

    def _replies(self, params: JSON, identity: Identity) -> JSON:
        channel = self._channel(params.get("channel"))
        ts = str(params.get("ts", ""))
        thread = self.replies.get((channel["id"], ts))
        if thread is None:
            parent = self._find_message(channel["id"], ts)
            if parent is None:
                raise ApiError("thread_not_found")
            thread = [parent]
        oldest, latest = float(params.get("oldest") or 0), float(params.get("latest") or "inf")
        inclusive = _flag(params.get("inclusive"))
        picked = [m for m in thread if m.get("ts") == ts or (oldest < float(m["ts"]) < latest)
                  or (inclusive and float(m["ts"]) in (oldest, latest))]  # fmt: skip
        limit = max(1, min(int(params.get("limit") or 1000), 1000))
        start = _cursor_offset(str(params["cursor"])) if params.get("cursor") else 0
        page = picked[start:start + limit]
        has_more = start + limit < len(picked)
        body: JSON = {"messages": copy.deepcopy(page), "has_more": has_more}
        if has_more:
            body["response_metadata"] = {"next_cursor": _offset_cursor(start + limit)}
        return body

    def _permalink(self, params: JSON, identity: Identity) -> JSON:
        channel = self._channel(params.get("channel"))
        ts = str(params.get("message_ts", ""))
        if not re.fullmatch(r"\d+\.\d+", ts):
            raise ApiError("message_not_found")
        return {"channel": channel["id"],
                "permalink": f"https://stub.slack.com/archives/{channel['id']}/p{ts.replace('.', '')}"}

    def _conversations_info(self, params: JSON, identity: Identity) -> JSON:
        channel = dict(self._channel(params.get("channel")))
        if not _flag(params.get("include_locale")):
            channel.pop("locale", None)
        if _flag(params.get("include_num_members")) and not channel.get("is_im"):
            channel["num_members"] = len(self.users)
        return {"channel": channel}

    def _users_info(self, params: JSON, identity: Identity) -> JSON:
        user = self.users.get(str(params.get("user", "")))
        if user is None:
            raise ApiError("user_not_found")
        shown = copy.deepcopy(user)
        if not _flag(params.get("include_locale")):
            shown.pop("locale", None)
        return {"user": shown}

    def _connections_open(self, params: JSON, identity: Identity) -> JSON:
        return {"url": self.socket.issue_url(identity.app_id)}

    def _oauth_v2_access(self, params: JSON, identity: Identity) -> JSON:
        code = str(params.get("code") or "")
        if not code or code in self._used_codes:
            raise ApiError("invalid_code")
        self._used_codes.add(code)
        grant = self._codes.pop(code, None) or {"team_id": "T2", "team_name": "Installed Team", "user_id": "U1",
                                                "bot_user_id": BOT_USER_ID, "bot_id": BOT_ID,
                                                "scope": self.bot_scopes, "user_scope": None}  # fmt: skip
        bot_token = f"xoxb-installed-{grant['team_id']}-{secrets.token_hex(8)}"
        bot_user = self.users.get(grant["bot_user_id"], {}).get("name", BOT_NAME)
        self._tokens[bot_token] = Identity(grant["team_id"], grant["team_name"], grant["bot_user_id"], bot_user,
                                           grant["bot_id"], grant["scope"])  # fmt: skip
        authed_user: JSON = {"id": grant["user_id"]}
        if grant["user_scope"]:
            user_token = f"xoxp-installed-{grant['team_id']}-{secrets.token_hex(8)}"
            self._tokens[user_token] = Identity(grant["team_id"], grant["team_name"], grant["user_id"], "installer",
                                                None, grant["user_scope"])  # fmt: skip
            authed_user.update({"scope": grant["user_scope"], "access_token": user_token, "token_type": "user"})
        body: JSON = {"app_id": APP_ID, "authed_user": authed_user, "scope": grant["scope"], "token_type": "bot",
                      "access_token": bot_token, "bot_user_id": grant["bot_user_id"],
                      "team": {"id": grant["team_id"], "name": grant["team_name"]}, "enterprise": None,
                      "is_enterprise_install": False}  # fmt: skip
        self.installs.append(body)
        return body

    # -- non-API endpoints --------------------------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        file_id = self._uploads.get(request.match_info["key"])
        stored = self.files.get(file_id or "")
        files: dict[str, bytes] = {}
        if request.content_type == "multipart/form-data":
            _, files = await self._read_params(request)
            content = next(iter(files.values()), b"")
        else:
            content = await request.read()
        name = stored.name if stored else "?"
        call = ApiCall(UPLOAD, {"file_id": file_id}, None, {name: content}, request.method)
        self.calls.append(call)
        if failure := self._take_failure(UPLOAD):
            call.status, call.error = failure.status, failure.error
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
            return web.Response(status=failure.status, text=failure.error, headers=headers)
        if stored is None:
            call.status, call.error = 404, "not_found"
            return web.Response(status=404, text="Not Found")
        stored.content, stored.uploaded = content, True
        return web.Response(text=f"OK - {len(content)}", content_type="text/plain")

    async def _download(self, request: web.Request) -> web.StreamResponse:
        team_file = request.match_info["team_file"]
        stored = self.files.get(team_file.split("-", 1)[-1])
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer "):].strip() if auth.startswith("Bearer ") else ""
        try:
            valid = bool(token) and not token.startswith("xapp-") and self._identity(token) is not None
        except ApiError:
            valid = False
        if stored is None or not (stored.completed or stored.uploaded):
            status = 404
            response = web.Response(status=404, text="Not Found")
        elif stored.forbidden or (not valid and self.unauthorized_download == "forbidden"):
            status = 403
            response = web.Response(status=403, text="Forbidden")
        elif not valid:  # what slack.com really does: a sign-in page, status 200, HTML
            status = 200
            response = web.Response(text="<!DOCTYPE html><html><body>Sign in to Slack</body></html>",
                                    content_type="text/html")  # fmt: skip
        else:
            status = 200
            response = web.Response(body=stored.content, content_type=stored.mimetype,
                                    headers={"Content-Disposition": f'attachment; filename="{stored.name}"'})
        self.downloads.append((stored.id if stored else team_file, valid, status))
        return response

    def _new_response_url(self, kind: str, team: str, **context: Any) -> str:
        path = f"/{kind}/{team}/{secrets.randbelow(10**13)}/{secrets.token_urlsafe(18)}"
        self._response_urls[path] = {"team": team, **context}
        return self.base + path

    @staticmethod
    def _trigger_id() -> str:
        return f"{secrets.randbelow(10**13)}.{secrets.randbelow(10**13)}.{secrets.token_hex(16)}"

    async def _response_url(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        kind = path.split("/")[1]
        if request.content_type == "application/json":
            body = await request.json()
        else:
            form = await request.post()
            body = json.loads(str(form.get("payload", "{}")))
        body = body if isinstance(body, dict) else {}
        context = self._response_urls.get(path)
        call = ApiCall(RESPONSE_URL, body, None, {}, request.method)
        self.calls.append(call)
        if failure := self._take_failure(RESPONSE_URL):
            call.status, call.error = failure.status, failure.error
            return web.json_response({"ok": False, "error": failure.error}, status=failure.status)
        self._response_url_uses[path] += 1
        if context is None or self._response_url_uses[path] > RESPONSE_URL_USES:  # status: a guess
            call.status, call.error = 404, "expired_url" if context is None else "used_url"
            return web.json_response({"ok": False, "error": call.error}, status=404)
        self.response_posts.append(ResponsePost(str(request.url), kind, body, context))
        self._apply_response(body, context)
        return web.json_response({"ok": True})

    def _apply_response(self, body: JSON, context: JSON) -> None:
        """What posting to a response_url does to the conversation."""
        channel, original_ts = context.get("channel", ""), context.get("message_ts")
        bot = self._identity("xoxb-response-url")  # response_url posts appear as the app's bot
        original = self._find_message(channel, original_ts) if original_ts else None
        if _flag(body.get("delete_original")) and original is not None:
            self.messages[channel].remove(original)
            self.deleted.append({**original, "channel": channel})
        elif _flag(body.get("replace_original")) and original is not None:
            self.edits.setdefault((channel, original["ts"]), []).append(copy.deepcopy(original))
            for key in ("text", "blocks", "attachments"):
                if key in body:
                    original[key] = body[key]
            original["edited"] = {"user": bot.user_id, "ts": next_ts()}
        elif body.get("response_type") == "in_channel":
            message = self._bot_message(bot, body, next_ts())
            self._store_message(channel, message, body.get("thread_ts") or None)
        else:
            message = self._bot_message(bot, body, next_ts())
            self.ephemerals.append({**message, "channel": channel, "to_user": context.get("user"),
                                    "thread_ts": body.get("thread_ts")})  # fmt: skip

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        """The browser half of OAuth: consent is instant and redirects to redirect_uri with a code."""
        query = dict(request.query)
        self.authorize_requests.append(query)
        redirect_uri = query.get("redirect_uri")
        if not redirect_uri or not query.get("client_id"):
            return web.Response(status=400, text="missing client_id or redirect_uri")
        code = self.issue_oauth_code(scope=query.get("scope") or self.bot_scopes,
                                     user_scope=query.get("user_scope") or None,
                                     team_id=query.get("team") or "T2")  # fmt: skip
        location = redirect_uri + ("&" if "?" in redirect_uri else "?") + urlencode(
            {"code": code, "state": query.get("state", "")})
        raise web.HTTPFound(location)
