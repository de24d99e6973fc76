"""A loopback stand-in for Discord: the v10 gateway websocket and the REST API, spoken to by the real discord.py.

    async with DiscordStub(heartbeat_interval_ms=100) as stub:
        client = discord.Client(intents=intents, guild_ready_timeout=0.05)
        async with running_client(stub, client):          # patches discord.py, starts it, waits for on_ready
            await stub.user_message("hello", attachments=[Upload("a.txt", b"hi")])
            rec = await stub.wait_for_request("POST", r"^/channels/\\d+/messages$")

Pointing discord.py at it (see `patch_discord`): the REST base is the class attribute `discord.http.Route.BASE`
(every request, webhooks and interaction callbacks included, is built from it) and the gateway is
`discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`: a plain `Client`/`commands.Bot` never calls `GET /gateway/bot`
(only `AutoShardedClient` does), it connects straight to that URL. discord.py takes the scheme as given (ws:// works),
appends `?v=10&encoding=json&compress=zlib-stream` (`zstd-stream` when `zstandard`/`compression.zstd` is importable),
and then reconnects/resumes at READY's `resume_gateway_url`, which points back here. zlib-stream is implemented
(one deflate context per connection, every message ending in a Z_SYNC_FLUSH); for any other compression the
stand-in sends plain text frames, which discord.py also accepts (it only decompresses binary frames).

What a discord.py bot must accommodate (all are plain constructor options, nothing private):
- `guild_ready_timeout` (default 2 s): discord.py waits that long after the last GUILD_CREATE before on_ready;
  pass e.g. 0.05 in tests.
- Responses must be JSON with the exact content type `application/json` and a 429 must carry a `Via` header or
  discord.py treats it as a Cloudflare ban; it sleeps `retry_after` from the body (X-RateLimit-* headers are
  only read from non-429 answers). The stand-in does all that.
- Privileged intents (message_content, members, presences) must be allowed by `privileged_intents` or the gateway
  closes with 4014 (discord.py raises `PrivilegedIntentsRequired`); without MESSAGE_CONTENT guild messages that
  do not mention the bot arrive with empty content/attachments/embeds/components, as on Discord.
- A re-IDENTIFY (after an invalid session, e.g. `disconnect(4009)` or `invalidate_session()`) waits 5 s in
  `Client.before_identify_hook`; override that hook in tests. RESUMEs do not wait.
- The bot's own messages come back as MESSAGE_CREATE/UPDATE/DELETE (`echo_own_messages`), as on Discord.

Paths in `Recorded.path` are relative to `/api/v10`. Errors use Discord's `{"code", "message"}` shape.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import mimetypes
import re
import secrets
import time
import uuid
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import BodyPartReader, WSMsgType, web

if TYPE_CHECKING:
    import discord

JSON = dict[str, Any]
API_VERSION = 10
API_PREFIX = f"/api/v{API_VERSION}"
DISCORD_EPOCH_MS = 1420070400000
MAX_CONTENT = 2000
MAX_EMBEDS = 10


class Intent:
    """Gateway intent bits (only the ones the stand-in looks at)."""

    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1  # privileged
    GUILD_PRESENCES = 1 << 8  # privileged
    GUILD_MESSAGES = 1 << 9
    GUILD_MESSAGE_REACTIONS = 1 << 10
    GUILD_MESSAGE_TYPING = 1 << 11
    DIRECT_MESSAGES = 1 << 12
    DIRECT_MESSAGE_REACTIONS = 1 << 13
    DIRECT_MESSAGE_TYPING = 1 << 14
    MESSAGE_CONTENT = 1 << 15  # privileged
    PRIVILEGED = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT


class Perm:
    """Permission bits."""

    ADD_REACTIONS = 1 << 6
    ADMINISTRATOR = 1 << 3
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    USE_APPLICATION_COMMANDS = 1 << 31
    CREATE_PUBLIC_THREADS = 1 << 35
    SEND_MESSAGES_IN_THREADS = 1 << 38
    BOT_DEFAULT = (ADD_REACTIONS | VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES | READ_MESSAGE_HISTORY
                   | USE_APPLICATION_COMMANDS | CREATE_PUBLIC_THREADS | SEND_MESSAGES_IN_THREADS)
    EVERYONE = VIEW_CHANNEL | SEND_MESSAGES | READ_MESSAGE_HISTORY | ADD_REACTIONS | USE_APPLICATION_COMMANDS


class MsgFlag:
    """Message flags."""

    SUPPRESS_EMBEDS = 1 << 2
    EPHEMERAL = 1 << 6
    LOADING = 1 << 7
    SUPPRESS_NOTIFICATIONS = 1 << 12
    IS_VOICE_MESSAGE = 1 << 13


class ChannelType:
    GUILD_TEXT = 0
    DM = 1
    GUILD_CATEGORY = 4
    PUBLIC_THREAD = 11


class MessageType:
    DEFAULT = 0
    REPLY = 19
    CHAT_INPUT_COMMAND = 20


# Application flags: the "limited" privileged-intent flags an unverified bot has when they are switched on.
APP_FLAG_FOR_INTENT = {Intent.GUILD_PRESENCES: 1 << 13, Intent.GUILD_MEMBERS: 1 << 15, Intent.MESSAGE_CONTENT: 1 << 19}
APP_FLAG_COMMAND_BADGE = 1 << 23
OPTION_TYPES = {"subcommand": 1, "group": 2, "string": 3, "integer": 4, "boolean": 5, "user": 6, "channel": 7,
                "role": 8, "mentionable": 9, "number": 10, "attachment": 11}
NON_RESUMABLE_CLOSE = frozenset({4004, 4007, 4009, 4010, 4011, 4012, 4013, 4014})


def iso_now() -> str:
    return datetime.now(UTC).isoformat()


def _json_dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """JSON with the exact `Content-Type: application/json` discord.py requires (no charset suffix)."""
    return web.Response(body=_json_dumps(data).encode(), status=status, content_type="application/json",
                        headers={"Via": "1.1 google", **(headers or {})})


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true")


class Snowflakes:
    """Increasing Discord snowflakes from the current time."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        value = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last = max(value, self._last + 1)
        return self._last


class Notifier:
    """Lets tests wait for a condition on the stand-in's (or anything's) state."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
        """Returns predicate()'s first truthy value; re-checked on every change here and at least every 20 ms."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), min(remaining, 0.02))


# -- recorded requests and injected errors ------------------------------------------------------------------


@dataclass
class UploadedFile:
    """One file part of a multipart request."""

    field: str  # "files[0]"
    filename: str
    content_type: str
    data: bytes


@dataclass
class Recorded:
    """One REST request as the stand-in saw it; the token value is never kept."""

    method: str
    path: str  # relative to /api/v10, e.g. "/channels/123/messages"
    query: dict[str, str]
    json: Any  # the JSON body, or multipart's `payload_json`, or None
    files: list[UploadedFile]
    form: dict[str, str]  # other multipart text fields
    headers: dict[str, str]  # lower-case names; authorization's value becomes "<scheme> <redacted>"
    authorized: bool  # an Authorization header was sent
    at: float  # time.monotonic() on arrival
    status: int | None = None  # what the stand-in answered


class ApiError(Exception):
    """A Discord-shaped error answer; raise it from a handler."""

    def __init__(self, status: int, code: int, message: str, errors: JSON | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status, self.code, self.message, self.errors = status, code, message, errors
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        body: JSON = {"message": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return json_response(body, status=self.status, headers=self.headers)

    @classmethod
    def invalid_form(cls, field_name: str, code: str, message: str) -> ApiError:
        return cls(400, 50035, "Invalid Form Body", {field_name: {"_errors": [{"code": code, "message": message}]}})


ERROR_DEFAULTS: dict[int, tuple[int, str]] = {
    400: (50035, "Invalid Form Body"),
    401: (0, "401: Unauthorized"),
    403: (50013, "Missing Permissions"),
    404: (0, "404: Not Found"),
    413: (40005, "Request entity too large"),
    500: (0, "500: Internal Server Error"),
    502: (0, "502: Bad Gateway"),
}


@dataclass
class Fault:
    """An injected error for the next `times` requests matching `method` and `re.search(path, api_path)`."""

    method: str
    path: str
    status: int = 429
    retry_after: float = 0.2
    global_: bool = False
    code: int | None = None
    message: str | None = None
    times: int = 1
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.hits < self.times and self.method in ("*", method) and re.search(self.path, path) is not None

    def response(self) -> web.Response:
        if self.status != 429:
            code, message = ERROR_DEFAULTS.get(self.status, (0, f"{self.status}: Error"))
            code = self.code if self.code is not None else code
            return ApiError(self.status, code, self.message or message).response()
        # discord.py sleeps `retry_after` from the body; it requires `Via` (else "Cloudflare ban") and JSON.
        body: JSON = {"message": self.message or "You are being rate limited.", "retry_after": self.retry_after,
                      "global": self.global_}
        if self.code is not None:
            body["code"] = self.code
        reset = time.time() + self.retry_after
        headers = {
            "Retry-After": str(max(1, round(self.retry_after + 0.499))),
            "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": f"{reset:.3f}",
            "X-RateLimit-Reset-After": f"{self.retry_after:.3f}", "X-RateLimit-Bucket": "stubbucket",
            "X-RateLimit-Scope": "global" if self.global_ else "user",
        }
        if self.global_:
            headers["X-RateLimit-Global"] = "true"
        return json_response(body, status=429, headers=headers)


# -- the Discord-side world ---------------------------------------------------------------------------------


@dataclass
class User:
    id: int
    username: str
    bot: bool = False
    global_name: str | None = None

    def payload(self) -> JSON:
        return {"id": str(self.id), "username": self.username, "discriminator": "0",
                "global_name": self.global_name if self.global_name is not None else self.username.title(),
                "avatar": None, "bot": self.bot, "system": False, "public_flags": 0, "flags": 0, "banner": None,
                "accent_color": None, "avatar_decoration_data": None}


@dataclass
class GuildSpec:
    """A guild to create; the first text channel gets the thread. Members are usernames (the bot is added)."""

    name: str = "Test Guild"
    text_channels: tuple[str, ...] = ("general", "random")
    thread: str | None = "help-thread"
    members: tuple[str, ...] = ("alice", "bob")
    bot_permissions: int = Perm.BOT_DEFAULT  # the bot's managed role
    everyone_permissions: int = Perm.EVERYONE  # @everyone (the bot has these too)
    locale: str = "en-US"


@dataclass
class Guild:
    """A created guild. Channel and thread payloads live in `World.channels`."""

    id: int
    name: str
    owner_id: int
    channel_ids: dict[str, int]  # name -> id, text channels and the thread
    category_id: int
    thread_id: int | None
    everyone_role: JSON
    bot_role: JSON
    member_ids: list[int]
    bot_permissions: int
    locale: str
    joined_at: str = field(default_factory=iso_now)

    def channel_id(self, name: str) -> int:
        return self.channel_ids[name]

    @property
    def text_channel_id(self) -> int:
        return next(iter(self.channel_ids.values()))


@dataclass
class Upload:
    """A file a user attaches (to a message or as an attachment command option)."""

    filename: str
    data: bytes
    content_type: str | None = None  # guessed from the filename when None
    duration_secs: float | None = None  # voice messages
    waveform: bytes | None = None  # voice messages; sent base64-encoded
    flags: int = 0
    description: str | None = None


@dataclass
class Callback:
    """One interaction callback (`POST /interactions/{id}/{token}/callback`)."""

    type: int  # 4 message, 5 deferred message, 6 deferred update, 7 update message, 8 autocomplete, 9 modal
    data: JSON
    at: float  # time.monotonic()


@dataclass
class InteractionRecord:
    """An interaction the stand-in dispatched, and what the bot did with it."""

    id: int
    token: str
    type: int  # 2 application command, 3 component
    payload: JSON
    channel_id: int
    guild_id: int | None
    dispatched_at: float  # time.monotonic()
    message_id: int | None = None  # the component's message
    callbacks: list[Callback] = field(default_factory=list)
    original_message_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    late_callbacks: int = 0  # callbacks refused for arriving after the deadline

    @property
    def callback(self) -> Callback | None:
        return self.callbacks[0] if self.callbacks else None

    @property
    def callback_latency_s(self) -> float | None:
        return None if not self.callbacks else self.callbacks[0].at - self.dispatched_at


class World:
    """Discord's side of things: users, guilds, channels, messages, attachments, interactions."""

    def __init__(self, *, bot_name: str, users: Sequence[str], guilds: Sequence[GuildSpec], base_url: str = "") -> None:
        self.ids = Snowflakes()
        self.base_url = base_url  # set once the server listens; attachment URLs point here
        self.bot = User(self.ids.next(), bot_name, bot=True)
        self.users: dict[int, User] = {self.bot.id: self.bot}
        for name in users:
            self.add_user(name)
        self.channels: dict[int, JSON] = {}
        self.dm_by_user: dict[int, int] = {}
        self.guilds: list[Guild] = [self._create_guild(spec) for spec in guilds]
        self.messages: dict[int, JSON] = {}
        self.edits: dict[int, list[JSON]] = {}  # message id -> earlier versions, oldest first
        self.deleted: dict[int, JSON] = {}
        self.files: dict[int, tuple[str, bytes]] = {}  # attachment id -> (content type, bytes)
        self.interactions: dict[int, InteractionRecord] = {}

    @property
    def application_id(self) -> int:
        return self.bot.id

    def add_user(self, username: str, *, bot: bool = False) -> User:
        user = User(self.ids.next(), username, bot=bot)
        self.users[user.id] = user
        return user

    def user(self, who: int | str) -> User:
        if isinstance(who, int):
            return self.users[who]
        return next(u for u in self.users.values() if u.username == who)

    def _create_guild(self, spec: GuildSpec) -> Guild:
        gid = self.ids.next()
        members = [self.user(n).id if any(u.username == n for u in self.users.values()) else self.add_user(n).id
                   for n in spec.members]
        everyone = {"id": str(gid), "name": "@everyone", "permissions": str(spec.everyone_permissions), "position": 0,
                    "color": 0, "hoist": False, "managed": False, "mentionable": False, "icon": None,
                    "unicode_emoji": None, "flags": 0}
        bot_role = {**everyone, "id": str(self.ids.next()), "name": self.bot.username, "position": 1,
                    "permissions": str(spec.bot_permissions), "managed": True, "tags": {"bot_id": str(self.bot.id)}}
        category = self.ids.next()
        self.channels[category] = {"id": str(category), "type": ChannelType.GUILD_CATEGORY, "guild_id": str(gid),
                                   "name": "Text Channels", "position": 0, "permission_overwrites": [],
                                   "parent_id": None, "nsfw": False, "flags": 0}
        channel_ids: dict[str, int] = {}
        for position, name in enumerate(spec.text_channels):
            cid = self.ids.next()
            channel_ids[name] = cid
            self.channels[cid] = {"id": str(cid), "type": ChannelType.GUILD_TEXT, "guild_id": str(gid), "name": name,
                                  "position": position, "permission_overwrites": [], "parent_id": str(category),
                                  "nsfw": False, "topic": None, "last_message_id": None, "rate_limit_per_user": 0,
                                  "flags": 0}
        owner = members[0] if members else self.bot.id
        thread_id = None
        if spec.thread and channel_ids:
            thread_id = int(self.new_thread(gid, next(iter(channel_ids.values())), spec.thread, owner)["id"])
            channel_ids[spec.thread] = thread_id
        return Guild(id=gid, name=spec.name, owner_id=owner, channel_ids=channel_ids,
                     category_id=category, thread_id=thread_id, everyone_role=everyone, bot_role=bot_role,
                     member_ids=[self.bot.id, *members], bot_permissions=spec.bot_permissions, locale=spec.locale)

    def new_thread(self, guild_id: int, parent_id: int, name: str, owner_id: int, thread_id: int | None = None) -> JSON:
        tid = thread_id if thread_id is not None else self.ids.next()
        now = iso_now()
        thread = {"id": str(tid), "type": ChannelType.PUBLIC_THREAD, "guild_id": str(guild_id),
                  "parent_id": str(parent_id), "owner_id": str(owner_id), "name": name, "last_message_id": None,
                  "message_count": 0, "member_count": 2, "total_message_sent": 0, "rate_limit_per_user": 0,
                  "flags": 0, "thread_metadata": {"archived": False, "auto_archive_duration": 1440,
                                                  "archive_timestamp": now, "locked": False,
                                                  "create_timestamp": now},
                  "member": {"id": str(tid), "user_id": str(self.bot.id), "join_timestamp": now, "flags": 1}}
        self.channels[tid] = thread
        return thread

    def guild(self, guild_id: int) -> Guild:
        return next(g for g in self.guilds if g.id == guild_id)

    def guild_of(self, channel_id: int) -> Guild | None:
        gid = self.channels[channel_id].get("guild_id")
        return None if gid is None else self.guild(int(gid))

    def channel(self, channel_id: int) -> JSON:
        try:
            return self.channels[channel_id]
        except KeyError:
            raise ApiError(404, 10003, "Unknown Channel") from None

    def dm_channel(self, user_id: int) -> JSON:
        """The bot's DM channel with a user (created on first use, like Discord)."""
        if user_id not in self.dm_by_user:
            cid = self.ids.next()
            self.dm_by_user[user_id] = cid
            self.channels[cid] = {"id": str(cid), "type": ChannelType.DM, "last_message_id": None, "flags": 0,
                                  "recipients": [self.users[user_id].payload()]}
        return self.channels[self.dm_by_user[user_id]]

    def member_payload(self, guild: Guild, user_id: int, *, with_user: bool = True) -> JSON:
        roles = [guild.bot_role["id"]] if user_id == self.bot.id else []
        member: JSON = {"roles": roles, "nick": None, "avatar": None, "banner": None, "joined_at": guild.joined_at,
                        "premium_since": None, "deaf": False, "mute": False, "pending": False, "flags": 0,
                        "communication_disabled_until": None}
        if with_user:
            member["user"] = self.users[user_id].payload()
        return member

    def permissions_of(self, guild: Guild, user_id: int) -> int:
        perms = int(guild.everyone_role["permissions"])
        if user_id == self.bot.id:
            perms |= guild.bot_permissions
        if user_id == guild.owner_id:
            perms |= Perm.ADMINISTRATOR
        return perms

    def guild_create_payload(self, guild: Guild) -> JSON:
        channels = [c for c in self.channels.values()
                    if c.get("guild_id") == str(guild.id) and c["type"] != ChannelType.PUBLIC_THREAD]
        threads = [c for c in self.channels.values()
                   if c.get("guild_id") == str(guild.id) and c["type"] == ChannelType.PUBLIC_THREAD]
        return {
            "id": str(guild.id), "name": guild.name, "icon": None, "splash": None, "discovery_splash": None,
            "owner_id": str(guild.owner_id), "afk_channel_id": None, "afk_timeout": 300, "verification_level": 0,
            "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0,
            "roles": [guild.everyone_role, guild.bot_role], "emojis": [], "stickers": [], "features": [],
            "application_id": None, "system_channel_id": str(guild.text_channel_id), "system_channel_flags": 0,
            "rules_channel_id": None, "public_updates_channel_id": None, "safety_alerts_channel_id": None,
            "max_members": 500000, "vanity_url_code": None, "description": None, "banner": None,
            "premium_tier": 0, "premium_subscription_count": 0, "premium_progress_bar_enabled": False,
            "preferred_locale": guild.locale, "joined_at": guild.joined_at, "large": False, "unavailable": False,
            "lazy": True, "member_count": len(guild.member_ids),
            "members": [self.member_payload(guild, uid) for uid in guild.member_ids],
            "channels": channels, "threads": threads, "voice_states": [], "presences": [], "stage_instances": [],
            "guild_scheduled_events": [], "soundboard_sounds": [], "embedded_activities": [],
            "permissions": str(self.permissions_of(guild, self.bot.id)),
        }

    def attachment(self, channel_id: int, upload: Upload) -> JSON:
        """Stores the bytes and returns the attachment object; its URL is served by the stand-in."""
        aid = self.ids.next()
        filename = re.sub(r"[^\w.\-]", "_", upload.filename) or "unknown"
        content_type = upload.content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        self.files[aid] = (content_type, upload.data)
        signature = f"?ex={int(time.time()) + 86400:x}&is={int(time.time()):x}&hm={secrets.token_hex(32)}&"
        url = f"{self.base_url}/attachments/{channel_id}/{aid}/{filename}{signature}"
        att: JSON = {"id": str(aid), "filename": filename, "size": len(upload.data), "url": url, "proxy_url": url,
                     "content_type": content_type, "flags": upload.flags}
        if upload.description is not None:
            att["description"] = upload.description
        if upload.duration_secs is not None:
            att["duration_secs"] = upload.duration_secs
            waveform = upload.waveform if upload.waveform is not None else bytes(range(0, 256, 4))
            att["waveform"] = base64.b64encode(waveform).decode()
        return att

    def new_message(self, channel_id: int, author: User, content: str = "", *, attachments: Sequence[JSON] = (),
                    embeds: Sequence[JSON] = (), components: Sequence[JSON] = (), flags: int = 0,
                    reply_to: int | None = None, mention_author: bool = True, msg_type: int | None = None,
                    extra: JSON | None = None) -> JSON:
        """Creates and stores a message object (the REST shape, without guild_id)."""
        channel = self.channel(channel_id)
        mid = self.ids.next()
        mentioned = [int(m) for m in re.findall(r"<@!?(\d+)>", content) if int(m) in self.users]
        message: JSON = {
            "id": str(mid), "channel_id": str(channel_id), "author": author.payload(), "content": content,
            "timestamp": iso_now(), "edited_timestamp": None, "tts": False, "mention_everyone": False,
            "mention_roles": [], "attachments": list(attachments), "embeds": list(embeds),
            "components": list(components), "pinned": False, "flags": flags, "reactions": [],
            "type": MessageType.DEFAULT if msg_type is None else msg_type,
        }
        if reply_to is not None:
            referenced = self.message(reply_to)
            guild_id = channel.get("guild_id")
            message["message_reference"] = {"type": 0, "message_id": str(reply_to),
                                            "channel_id": referenced["channel_id"], "guild_id": guild_id}
            message["referenced_message"] = {k: v for k, v in referenced.items() if k != "referenced_message"}
            if msg_type is None:
                message["type"] = MessageType.REPLY
            if mention_author:
                mentioned.append(int(referenced["author"]["id"]))
        message["mentions"] = [self.users[uid].payload() for uid in dict.fromkeys(mentioned)]
        if extra:
            message.update(extra)
        self.messages[mid] = message
        channel["last_message_id"] = str(mid)
        return message

    def message(self, message_id: int) -> JSON:
        try:
            return self.messages[message_id]
        except KeyError:
            raise ApiError(404, 10008, "Unknown Message") from None

    def edit_message(self, message_id: int, changes: JSON, new_attachments: Sequence[JSON] = ()) -> JSON:
        """Applies an edit (only the fields present); the previous version goes to `edits`."""
        message = self.message(message_id)
        self.edits.setdefault(message_id, []).append(copy.deepcopy(message))
        for key, empty in (("content", ""), ("embeds", []), ("components", [])):
            if key in changes:  # null clears the field
                message[key] = changes[key] if changes[key] is not None else empty
        if "flags" in changes and changes["flags"] is not None:
            kept = message["flags"] & (MsgFlag.EPHEMERAL | MsgFlag.IS_VOICE_MESSAGE)
            message["flags"] = (int(changes["flags"]) & ~MsgFlag.LOADING) | kept
        else:
            message["flags"] &= ~MsgFlag.LOADING
        if "attachments" in changes and changes["attachments"] is not None:
            keep = {str(a.get("id")) for a in changes["attachments"]}
            message["attachments"] = [a for a in message["attachments"] if a["id"] in keep]
        message["attachments"] = [*message["attachments"], *new_attachments]
        message["edited_timestamp"] = iso_now()
        return message

    def event_payload(self, message: JSON) -> JSON:
        """The MESSAGE_CREATE/UPDATE shape: adds guild_id and the author's partial member in guilds."""
        data = copy.deepcopy(message)
        guild = self.guild_of(int(message["channel_id"]))
        if guild is not None:
            data["guild_id"] = str(guild.id)
            author_id = int(message["author"]["id"])
            if "webhook_id" not in message and author_id in guild.member_ids:
                data["member"] = self.member_payload(guild, author_id, with_user=False)
            for mention in data["mentions"]:
                if int(mention["id"]) in guild.member_ids:
                    mention["member"] = self.member_payload(guild, int(mention["id"]), with_user=False)
        return data

    def channel_history(self, channel_id: int) -> list[JSON]:
        return [m for m in self.messages.values()
                if m["channel_id"] == str(channel_id) and not m["flags"] & MsgFlag.EPHEMERAL]


class Commands:
    """Application commands as synced by `CommandTree.sync()` (bulk overwrite), global and per guild."""

    def __init__(self, ids: Snowflakes, application_id: int) -> None:
        self._ids = ids
        self._application_id = application_id
        self.scopes: dict[int | None, list[JSON]] = {}  # None = global
        self.sync_counts: Counter[int | None] = Counter()

    def overwrite(self, guild_id: int | None, commands: list[JSON]) -> list[JSON]:
        if not isinstance(commands, list) or len(commands) > 100:
            raise ApiError.invalid_form("_errors", "BASE_TYPE_BAD_LENGTH", "Must be between 0 and 100 in length.")
        previous = {(c["name"], c.get("type", 1)): c for c in self.scopes.get(guild_id, [])}
        stored = []
        for command in commands:
            name = command.get("name", "")
            if not re.fullmatch(r"[-_\w]{1,32}", name) or (command.get("type", 1) == 1 and name != name.lower()):
                raise ApiError.invalid_form("name", "APPLICATION_COMMAND_INVALID_NAME", f"Invalid name: {name!r}")
            old = previous.get((name, command.get("type", 1)))
            record: JSON = {"default_member_permissions": None, "type": 1, "nsfw": False, "options": [],
                            "description": "", "contexts": None, "integration_types": [0],
                            **copy.deepcopy(command)}
            record.update({"id": old["id"] if old else str(self._ids.next()),
                           "application_id": str(self._application_id), "version": str(self._ids.next())})
            if guild_id is not None:
                record["guild_id"] = str(guild_id)
            stored.append(record)
        self.scopes[guild_id] = stored
        self.sync_counts[guild_id] += 1
        return stored

    def find(self, name: str, guild_id: int | None) -> JSON | None:
        """The command an interaction for `name` refers to: the guild's own first, then the global one."""
        for scope in ((guild_id, None) if guild_id is not None else (None,)):
            for command in self.scopes.get(scope, []):
                if command["name"] == name:
                    return command
        return None


# -- gateway ------------------------------------------------------------------------------------------------


@dataclass
class Identified:
    """One IDENTIFY (op 2) as received; the token itself is not kept."""

    intents: int
    token_present: bool
    shard: list[int] | None
    payload: JSON  # `d` with the token replaced by "<redacted>"
    at: float


class GatewayConnection:
    """One websocket connection; sends are serialized because zlib-stream shares one deflate context."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, *, compress: bool) -> None:
        self.ws = ws
        self.request = request
        self.path = request.path
        self.query = dict(request.query)
        self.compressed = compress
        self._deflate = zlib.compressobj() if compress else None
        self._lock = asyncio.Lock()
        self.session: GatewaySession | None = None
        self.heartbeats = 0
        self.received: list[JSON] = []  # every payload from the client
        self.closed = False
        self.close_code: int | None = None

    async def send(self, payload: JSON) -> None:
        text = _json_dumps(payload)
        async with self._lock:
            if self._deflate is not None:
                await self.ws.send_bytes(self._deflate.compress(text.encode()) + self._deflate.flush(zlib.Z_SYNC_FLUSH))
            else:
                await self.ws.send_str(text)

    async def close(self, code: int, reason: str = "") -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=reason.encode())

    def abort(self) -> None:
        """Drops the TCP connection without a close frame."""
        transport = self.request.transport
        if transport is not None:
            transport.abort()


class GatewaySession:
    """A gateway session: its sequence numbers and the log RESUME replays from."""

    def __init__(self, session_id: str, identified: Identified) -> None:
        self.id = session_id
        self.identified = identified
        self.intents = identified.intents
        self.seq = 0
        self.log: list[tuple[int, str, JSON]] = []
        self.connection: GatewayConnection | None = None
        self.resumable = True

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


class Gateway:
    """Discord's v10 gateway: HELLO, IDENTIFY/READY/GUILD_CREATE, heartbeats, RESUME with replay, dispatch."""

    def __init__(self, world: World, notifier: Notifier, *, heartbeat_interval_ms: int, compression: str,
                 token: str | None, privileged_intents: int) -> None:
        self.world = world
        self.notifier = notifier
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.compression = compression
        self.token = token
        self.privileged_intents = privileged_intents
        self.url = ""  # ws://host:port/gateway, set by the stub
        self.resume_url = ""  # READY's resume_gateway_url
        self.ack_heartbeats = True  # False: a "zombied" connection, heartbeats go unanswered
        self.connections: list[GatewayConnection] = []
        self.sessions: dict[str, GatewaySession] = {}
        self.session: GatewaySession | None = None  # the latest identified one; dispatch goes there
        self.identifies: list[Identified] = []
        self.resumes: list[JSON] = []  # `d` of each RESUME, token redacted
        self.presence_updates: list[JSON] = []
        self.filtered: list[tuple[str, JSON]] = []  # dispatches not sent for lack of intents

    @property
    def identify_count(self) -> int:
        return len(self.identifies)

    @property
    def resume_count(self) -> int:
        return len(self.resumes)

    @property
    def heartbeat_count(self) -> int:
        return sum(c.heartbeats for c in self.connections)

    @property
    def connection(self) -> GatewayConnection | None:
        return None if self.session is None else self.session.connection

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        compress = self.compression == "auto" and request.query.get("compress") == "zlib-stream"
        conn = GatewayConnection(ws, request, compress=compress)
        self.connections.append(conn)
        self.notifier.notify()
        try:
            await conn.send({"op": 10, "s": None, "t": None,
                             "d": {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["[\"stub-gateway\"]"]}})
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                try:
                    payload = json.loads(msg.data)
                except ValueError:
                    await conn.close(4002, "Error while decoding payload.")
                    break
                conn.received.append(payload)
                await self._on_payload(conn, payload)
                self.notifier.notify()
        except (ConnectionResetError, RuntimeError):
            pass
        finally:
            conn.closed = True
            conn.close_code = ws.close_code
            if conn.session is not None and conn.session.connection is conn:
                conn.session.connection = None
            self.notifier.notify()
        return ws

    async def _on_payload(self, conn: GatewayConnection, payload: JSON) -> None:
        op, data = payload.get("op"), payload.get("d")
        if op == 1:
            conn.heartbeats += 1
            if self.ack_heartbeats:
                await conn.send({"op": 11, "s": None, "t": None, "d": None})
        elif op == 2:
            await self._identify(conn, data or {})
        elif op == 6:
            await self._resume(conn, data or {})
        elif conn.session is None:
            await conn.close(4003, "Not authenticated.")
        elif op == 3:
            self.presence_updates.append(data or {})
        elif op == 4:
            pass  # voice state update: accepted, no voice server here
        elif op == 8:
            await self._members_chunk(conn, data or {})
        else:
            await conn.close(4001, "Unknown opcode.")

    async def _identify(self, conn: GatewayConnection, data: JSON) -> None:
        token = data.get("token")
        identified = Identified(intents=int(data.get("intents", 0) or 0), token_present=bool(token),
                                shard=data.get("shard"), payload={**data, "token": "<redacted>"},
                                at=time.monotonic())
        self.identifies.append(identified)
        if conn.session is not None:
            return await conn.close(4005, "Already authenticated.")
        if not token or (self.token is not None and token != self.token):
            return await conn.close(4004, "Authentication failed.")
        if "intents" not in data:
            return await conn.close(4013, "Invalid intent(s).")
        if identified.intents & Intent.PRIVILEGED & ~self.privileged_intents:
            return await conn.close(4014, "Disallowed intent(s).")
        session = GatewaySession(uuid.uuid4().hex, identified)
        self.sessions[session.id] = session
        self.session = session
        session.connection = conn
        conn.session = session
        world = self.world
        ready: JSON = {
            "v": API_VERSION, "user_settings": {}, "user": {**world.bot.payload(), "verified": True,
                                                            "mfa_enabled": False, "email": None},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in world.guilds], "session_type": "normal",
            "session_id": session.id, "resume_gateway_url": self.resume_url, "relationships": [],
            "private_channels": [], "presences": [], "geo_ordered_rtc_regions": ["stub"], "guild_join_requests": [],
            "application": {"id": str(world.application_id), "flags": self.application_flags()},
            "_trace": ["[\"stub-gateway\"]"],
        }
        if identified.shard is not None:
            ready["shard"] = identified.shard
        await self.dispatch("READY", ready)
        for guild in world.guilds:
            await self.dispatch("GUILD_CREATE", world.guild_create_payload(guild))

    def application_flags(self) -> int:
        flags = APP_FLAG_COMMAND_BADGE
        for intent, flag in APP_FLAG_FOR_INTENT.items():
            if self.privileged_intents & intent:
                flags |= flag
        return flags

    async def _resume(self, conn: GatewayConnection, data: JSON) -> None:
        self.resumes.append({**data, "token": "<redacted>"})
        session = self.sessions.get(str(data.get("session_id")))
        seq = data.get("seq") or 0
        if self.token is not None and data.get("token") != self.token:
            return await conn.close(4004, "Authentication failed.")
        if session is None or not session.resumable or seq > session.seq:
            await conn.send({"op": 9, "s": None, "t": None, "d": False})
            return
        if session.connection is not None and session.connection is not conn:
            await session.connection.close(4000, "Session resumed elsewhere.")
        session.connection = conn
        conn.session = session
        for event_seq, event, payload in session.log:
            if event_seq > seq:
                await conn.send({"op": 0, "s": event_seq, "t": event, "d": payload})
        await conn.send({"op": 0, "s": session.next_seq(), "t": "RESUMED", "d": {"_trace": ["[\"stub-gateway\"]"]}})

    async def _members_chunk(self, conn: GatewayConnection, data: JSON) -> None:
        guild = next((g for g in self.world.guilds if str(g.id) == str(data.get("guild_id"))), None)
        if guild is None:
            return
        user_ids = {int(u) for u in data.get("user_ids") or []}
        query = str(data.get("query") or "").lower()
        members = [self.world.member_payload(guild, uid) for uid in guild.member_ids
                   if (not user_ids or uid in user_ids) and self.world.users[uid].username.lower().startswith(query)]
        limit = int(data.get("limit") or 0)
        chunk = {"guild_id": str(guild.id), "members": members[:limit] if limit else members, "chunk_index": 0,
                 "chunk_count": 1, "not_found": []}
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        await self.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    @staticmethod
    def required_intent(event: str, data: JSON) -> int | None:
        in_guild = data.get("guild_id") is not None
        if event.startswith("MESSAGE_REACTION_"):
            return Intent.GUILD_MESSAGE_REACTIONS if in_guild else Intent.DIRECT_MESSAGE_REACTIONS
        if event.startswith("MESSAGE_"):
            return Intent.GUILD_MESSAGES if in_guild else Intent.DIRECT_MESSAGES
        if event == "TYPING_START":
            return Intent.GUILD_MESSAGE_TYPING if in_guild else Intent.DIRECT_MESSAGE_TYPING
        if event.startswith(("GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE", "CHANNEL_", "THREAD_", "GUILD_ROLE_")):
            return Intent.GUILDS
        return None

    def _without_content(self, event: str, data: JSON, intents: int) -> JSON:
        """What an app without MESSAGE_CONTENT sees of someone else's guild message that does not mention it."""
        if intents & Intent.MESSAGE_CONTENT or event not in ("MESSAGE_CREATE", "MESSAGE_UPDATE"):
            return data
        bot_id = str(self.world.bot.id)
        author = (data.get("author") or {}).get("id")
        if data.get("guild_id") is None or author == bot_id or any(m["id"] == bot_id for m in data.get("mentions", [])):
            return data
        blank = {k: v for k, v in data.items() if k != "poll"}
        return {**blank, "content": "", "embeds": [], "attachments": [], "components": []}

    async def dispatch(self, event: str, data: JSON) -> int | None:
        """Sends an op-0 dispatch on the current session (buffered for RESUME while disconnected).

        Returns its sequence number, or None when the session's intents exclude it (Discord would not send it)."""
        session = self.session
        if session is None:
            raise RuntimeError(f"cannot dispatch {event}: no client has identified yet")
        needed = self.required_intent(event, data)
        if needed is not None and not session.intents & needed:
            self.filtered.append((event, data))
            return None
        data = self._without_content(event, data, session.intents)
        seq = session.next_seq()
        session.log.append((seq, event, data))
        conn = session.connection
        if conn is not None and not conn.closed:
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await conn.send({"op": 0, "s": seq, "t": event, "d": data})
        self.notifier.notify()
        return seq

    async def disconnect(self, code: int | None = 4000, *, resumable: bool | None = None) -> None:
        """Drops the current connection: a close frame with `code`, or with `code=None` an abrupt TCP abort.

        The session stays resumable unless `resumable=False` (default: False for 4007/4009 and the fatal codes)."""
        conn = self.connection
        if conn is None:
            raise RuntimeError("no live gateway connection to drop")
        if self.session is not None:
            self.session.resumable = resumable if resumable is not None else code not in NON_RESUMABLE_CLOSE
            self.session.connection = None
        if code is None:
            conn.abort()
        else:
            await conn.close(code, "stub disconnect")

    async def request_reconnect(self) -> None:
        """Sends op 7 RECONNECT: the client closes and RESUMEs at resume_gateway_url."""
        conn = self.connection
        if conn is not None:
            await conn.send({"op": 7, "s": None, "t": None, "d": None})

    async def invalidate_session(self, resumable: bool = False) -> None:
        """Sends op 9 INVALID_SESSION; with resumable=False the client IDENTIFYs afresh."""
        conn = self.connection
        if self.session is not None and not resumable:
            self.session.resumable = False
        if conn is not None:
            await conn.send({"op": 9, "s": None, "t": None, "d": resumable})

    async def close_all(self) -> None:
        for conn in self.connections:
            if not conn.closed:
                await conn.close(1001, "stub shutting down")


# -- REST ---------------------------------------------------------------------------------------------------


@dataclass
class Body:
    json: Any = None
    files: list[UploadedFile] = field(default_factory=list)
    form: dict[str, str] = field(default_factory=dict)


BODY = web.RequestKey("discord_stub_body", Body)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RestApi:
    """The REST routes under /api/v10 plus the attachment CDN; records every API request."""

    def __init__(self, world: World, gateway: Gateway, commands: Commands, notifier: Notifier, *,
                 token: str | None, callback_deadline_s: float, echo_own_messages: bool, upload_limit: int) -> None:
        self.world = world
        self.gateway = gateway
        self.commands = commands
        self.notifier = notifier
        self.token = token
        self.callback_deadline_s = callback_deadline_s
        self.echo_own_messages = echo_own_messages
        self.upload_limit = upload_limit
        self.requests: list[Recorded] = []
        self.downloads: list[int] = []  # attachment ids fetched from the CDN route
        self.faults: list[Fault] = []

    def routes(self) -> list[web.RouteDef]:
        p = API_PREFIX
        get, post, patch, put, delete = web.get, web.post, web.patch, web.put, web.delete
        wh = p + "/webhooks/{app_id}/{token}"
        return [
            get(p + "/gateway", self._gateway), get(p + "/gateway/bot", self._gateway_bot),
            get(p + "/users/@me", self._me), get(p + "/users/@me/guilds", self._my_guilds),
            post(p + "/users/@me/channels", self._create_dm), get(p + "/users/{user_id}", self._user),
            get(p + "/oauth2/applications/@me", self._app_info), get(p + "/applications/@me", self._app_info),
            get(p + "/channels/{channel_id}", self._channel),
            get(p + "/channels/{channel_id}/messages", self._history),
            post(p + "/channels/{channel_id}/messages", self._create_message),
            get(p + "/channels/{channel_id}/messages/{message_id}", self._get_message),
            patch(p + "/channels/{channel_id}/messages/{message_id}", self._edit_message),
            delete(p + "/channels/{channel_id}/messages/{message_id}", self._delete_message),
            post(p + "/channels/{channel_id}/messages/{message_id}/threads", self._thread_from_message),
            put(p + "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._no_content),
            delete(p + "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._no_content),
            post(p + "/channels/{channel_id}/typing", self._no_content),
            get(p + "/guilds/{guild_id}", self._guild), get(p + "/guilds/{guild_id}/members/{user_id}", self._member),
            post(p + "/interactions/{interaction_id}/{token}/callback", self._callback),
            post(wh, self._webhook_send), get(wh + "/messages/{message_id}", self._webhook_get),
            patch(wh + "/messages/{message_id}", self._webhook_edit),
            delete(wh + "/messages/{message_id}", self._webhook_delete),
            put(p + "/applications/{app_id}/commands", self._sync_commands),
            get(p + "/applications/{app_id}/commands", self._get_commands),
            put(p + "/applications/{app_id}/guilds/{guild_id}/commands", self._sync_commands),
            get(p + "/applications/{app_id}/guilds/{guild_id}/commands", self._get_commands),
            get("/attachments/{channel_id}/{attachment_id}/{filename}", self._download),
        ]

    # -- plumbing --

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX + "/"):
            return await handler(request)
        path = request.path[len(API_PREFIX):]
        body = await self._read_body(request)
        auth = request.headers.get("Authorization")
        headers = {k.lower(): v for k, v in request.headers.items()}
        if auth is not None:
            headers["authorization"] = f"{auth.split(' ', 1)[0]} <redacted>"
        recorded = Recorded(method=request.method, path=path, query=dict(request.query), json=body.json,
                            files=body.files, form=body.form, headers=headers, authorized=auth is not None,
                            at=time.monotonic())
        self.requests.append(recorded)
        request[BODY] = body
        response = await self._respond(request, handler, recorded, auth)
        recorded.status = response.status
        self.notifier.notify()
        return response

    async def _respond(self, request: web.Request, handler: Handler, recorded: Recorded,
                       auth: str | None) -> web.StreamResponse:
        fault = next((f for f in self.faults if f.matches(recorded.method, recorded.path)), None)
        if fault is not None:
            fault.hits += 1
            return fault.response()
        needs_auth = not recorded.path.startswith(("/webhooks/", "/interactions/"))
        if needs_auth and (auth is None or (self.token is not None and auth != f"Bot {self.token}")):
            return ApiError(401, 0, "401: Unauthorized").response()
        if sum(len(f.data) for f in recorded.files) > self.upload_limit:
            return ApiError(413, 40005, "Request entity too large").response()
        try:
            return await handler(request)
        except ApiError as error:
            return error.response()
        except web.HTTPNotFound:
            return ApiError(404, 0, "404: Not Found").response()
        except web.HTTPMethodNotAllowed:
            return ApiError(405, 0, "405: Method Not Allowed").response()

    @staticmethod
    async def _read_body(request: web.Request) -> Body:
        body = Body()
        if request.content_type == "application/json":
            raw = await request.read()
            body.json = json.loads(raw) if raw else None
        elif request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    continue  # a nested multipart; Discord clients never send one
                data = bytes(await part.read())
                name = part.name or ""
                if part.filename is not None:
                    ctype = part.headers.get("Content-Type", "application/octet-stream")
                    body.files.append(UploadedFile(name, part.filename, ctype, data))
                elif name == "payload_json":
                    body.json = json.loads(data)
                else:
                    body.form[name] = data.decode()
        return body

    @staticmethod
    def _snowflake(request: web.Request, name: str) -> int:
        try:
            return int(request.match_info[name])
        except ValueError:
            raise ApiError.invalid_form(name, "NUMBER_TYPE_COERCE", "Value is not snowflake.") from None

    def _json(self, request: web.Request) -> JSON:
        data = request[BODY].json
        return data if isinstance(data, dict) else {}

    async def _echo(self, event: str, data: JSON) -> None:
        if self.echo_own_messages and self.gateway.session is not None:
            await self.gateway.dispatch(event, data)

    def _attachments_from(self, channel_id: int, payload: JSON, files: Sequence[UploadedFile]) -> list[JSON]:
        """New attachment objects for uploaded `files[n]` parts, named/described by `payload['attachments']`."""
        meta = {str(a.get("id")): a for a in payload.get("attachments") or []}
        result = []
        for index, upload in enumerate(files):
            match = re.fullmatch(r"files\[(\d+)\]", upload.field)
            info = meta.get(match.group(1) if match else str(index), {})
            ctype = upload.content_type if upload.content_type != "application/octet-stream" else None
            result.append(self.world.attachment(channel_id, Upload(
                filename=info.get("filename") or upload.filename, data=upload.data, content_type=ctype,
                description=info.get("description"), duration_secs=info.get("duration_secs"))))
        return result

    @staticmethod
    def _validate(payload: JSON, files: Sequence[UploadedFile], *, creating: bool) -> None:
        content = payload.get("content")
        if content is not None and len(str(content)) > MAX_CONTENT:
            raise ApiError.invalid_form("content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length.")
        if len(payload.get("embeds") or []) > MAX_EMBEDS:
            raise ApiError.invalid_form("embeds", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBEDS} or fewer in length.")
        if creating and not (content or payload.get("embeds") or files or payload.get("components")
                             or payload.get("sticker_ids") or payload.get("poll")):
            raise ApiError(400, 50006, "Cannot send an empty message")

    def _check_can_send(self, channel: JSON, files: Sequence[UploadedFile]) -> None:
        guild = self.world.guild_of(int(channel["id"]))
        if guild is None:
            return
        perms = self.world.permissions_of(guild, self.world.bot.id)
        if perms & Perm.ADMINISTRATOR:
            return
        send = Perm.SEND_MESSAGES_IN_THREADS if channel["type"] == ChannelType.PUBLIC_THREAD else Perm.SEND_MESSAGES
        needed = Perm.VIEW_CHANNEL | send | (Perm.ATTACH_FILES if files else 0)
        if perms & needed != needed:
            raise ApiError(403, 50013, "Missing Permissions")

    # -- misc --

    async def _no_content(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={"Via": "1.1 google"})

    async def _gateway(self, request: web.Request) -> web.Response:
        return json_response({"url": self.gateway.url})

    async def _gateway_bot(self, request: web.Request) -> web.Response:
        return json_response({"url": self.gateway.url, "shards": 1, "session_start_limit": {
            "total": 1000, "remaining": 1000 - self.gateway.identify_count, "reset_after": 86_400_000,
            "max_concurrency": 1}})

    async def _me(self, request: web.Request) -> web.Response:
        return json_response({**self.world.bot.payload(), "verified": True, "mfa_enabled": False, "email": None})

    async def _my_guilds(self, request: web.Request) -> web.Response:
        world = self.world
        return json_response([{"id": str(g.id), "name": g.name, "icon": None, "banner": None, "owner": False,
                               "permissions": str(world.permissions_of(g, world.bot.id)), "features": []}
                              for g in world.guilds])

    async def _user(self, request: web.Request) -> web.Response:
        try:
            return json_response(self.world.users[self._snowflake(request, "user_id")].payload())
        except KeyError:
            raise ApiError(404, 10013, "Unknown User") from None

    async def _app_info(self, request: web.Request) -> web.Response:
        world = self.world
        owner = next((u for u in world.users.values() if not u.bot), world.bot)
        return json_response({
            "id": str(world.application_id), "name": world.bot.username, "icon": None, "description": "",
            "summary": "", "type": None, "bot_public": True, "bot_require_code_grant": False,
            "verify_key": "0" * 64, "owner": owner.payload(), "team": None, "flags": self.gateway.application_flags(),
            "bot": world.bot.payload(), "hook": True, "redirect_uris": [], "interactions_endpoint_url": None,
            "role_connections_verification_url": None, "tags": [], "approximate_guild_count": len(world.guilds),
            "integration_types_config": {"0": {}}, "rpc_origins": [], "terms_of_service_url": None,
            "privacy_policy_url": None, "custom_install_url": None, "install_params": None,
        })

    async def _guild(self, request: web.Request) -> web.Response:
        gid = self._snowflake(request, "guild_id")
        if not any(g.id == gid for g in self.world.guilds):
            raise ApiError(404, 10004, "Unknown Guild")
        payload = self.world.guild_create_payload(self.world.guild(gid))
        for key in ("members", "channels", "threads", "voice_states", "presences", "joined_at", "large",
                    "member_count", "lazy", "unavailable"):
            payload.pop(key, None)
        return json_response(payload)

    async def _member(self, request: web.Request) -> web.Response:
        gid, uid = self._snowflake(request, "guild_id"), self._snowflake(request, "user_id")
        guild = next((g for g in self.world.guilds if g.id == gid), None)
        if guild is None:
            raise ApiError(404, 10004, "Unknown Guild")
        if uid not in guild.member_ids:
            raise ApiError(404, 10007, "Unknown Member")
        return json_response(self.world.member_payload(guild, uid))

    async def _create_dm(self, request: web.Request) -> web.Response:
        try:
            recipient = int(self._json(request)["recipient_id"])
        except (KeyError, TypeError, ValueError):
            raise ApiError.invalid_form("recipient_id", "BASE_TYPE_REQUIRED", "This field is required") from None
        if recipient not in self.world.users:
            raise ApiError(400, 50007, "Cannot send messages to this user")
        return json_response(self.world.dm_channel(recipient))

    async def _channel(self, request: web.Request) -> web.Response:
        return json_response(self.world.channel(self._snowflake(request, "channel_id")))

    async def _download(self, request: web.Request) -> web.Response:
        try:
            aid = int(request.match_info["attachment_id"])
            content_type, data = self.world.files[aid]
        except (KeyError, ValueError):
            return web.Response(status=404, text="Not Found")
        self.downloads.append(aid)
        return web.Response(body=data, content_type=content_type)

    # -- channel messages --

    async def _history(self, request: web.Request) -> web.Response:
        cid = self._snowflake(request, "channel_id")
        self.world.channel(cid)
        messages = sorted(self.world.channel_history(cid), key=lambda m: int(m["id"]), reverse=True)
        if "before" in request.query:
            messages = [m for m in messages if int(m["id"]) < int(request.query["before"])]
        if "after" in request.query:
            messages = [m for m in messages if int(m["id"]) > int(request.query["after"])]
        return json_response(messages[: int(request.query.get("limit", 50))])

    async def _get_message(self, request: web.Request) -> web.Response:
        message = self.world.message(self._snowflake(request, "message_id"))
        if message["channel_id"] != request.match_info["channel_id"]:
            raise ApiError(404, 10008, "Unknown Message")
        return json_response(message)

    async def _create_message(self, request: web.Request) -> web.Response:
        cid = self._snowflake(request, "channel_id")
        channel = self.world.channel(cid)
        payload, files = self._json(request), request[BODY].files
        self._check_can_send(channel, files)
        self._validate(payload, files, creating=True)
        reference = payload.get("message_reference") or {}
        reply_to = int(reference["message_id"]) if reference.get("message_id") else None
        if reply_to is not None and reply_to not in self.world.messages:
            if reference.get("fail_if_not_exists", True):
                raise ApiError.invalid_form("message_reference", "REPLIES_UNKNOWN_MESSAGE", "Unknown message")
            reply_to = None
        allowed = payload.get("allowed_mentions")  # replies ping unless allowed_mentions leaves replied_user out
        mentions_author = allowed is None or bool(allowed.get("replied_user", False))
        message = self.world.new_message(
            cid, self.world.bot, str(payload.get("content") or ""),
            attachments=self._attachments_from(cid, payload, files), embeds=payload.get("embeds") or [],
            components=payload.get("components") or [], flags=int(payload.get("flags") or 0), reply_to=reply_to,
            mention_author=mentions_author, extra={"nonce": payload["nonce"]} if payload.get("nonce") else None)
        await self._echo("MESSAGE_CREATE", self.world.event_payload(message))
        return json_response(message)

    async def _edit_message(self, request: web.Request) -> web.Response:
        cid, mid = self._snowflake(request, "channel_id"), self._snowflake(request, "message_id")
        self.world.channel(cid)
        message = self.world.message(mid)
        if message["channel_id"] != str(cid):
            raise ApiError(404, 10008, "Unknown Message")
        payload, files = self._json(request), request[BODY].files
        if message["author"]["id"] != str(self.world.bot.id) and set(payload) - {"flags"}:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        self._validate(payload, files, creating=False)
        edited = self.world.edit_message(mid, payload, self._attachments_from(cid, payload, files))
        await self._echo("MESSAGE_UPDATE", self.world.event_payload(edited))
        return json_response(edited)

    async def _delete_message(self, request: web.Request) -> web.Response:
        cid, mid = self._snowflake(request, "channel_id"), self._snowflake(request, "message_id")
        message = self.world.message(mid)
        if message["channel_id"] != str(cid):
            raise ApiError(404, 10008, "Unknown Message")
        await self._delete(message)
        return web.Response(status=204, headers={"Via": "1.1 google"})

    async def _delete(self, message: JSON) -> None:
        mid = int(message["id"])
        self.world.deleted[mid] = self.world.messages.pop(mid)
        event: JSON = {"id": message["id"], "channel_id": message["channel_id"]}
        guild = self.world.guild_of(int(message["channel_id"]))
        if guild is not None:
            event["guild_id"] = str(guild.id)
        if not message["flags"] & MsgFlag.EPHEMERAL:
            await self._echo("MESSAGE_DELETE", event)

    async def _thread_from_message(self, request: web.Request) -> web.Response:
        cid, mid = self._snowflake(request, "channel_id"), self._snowflake(request, "message_id")
        guild = self.world.guild_of(cid) if cid in self.world.channels else None
        if guild is None:
            raise ApiError(404, 10003, "Unknown Channel")
        self.world.message(mid)
        body = self._json(request)
        # A thread started from a message shares that message's id, like on Discord.
        thread = self.world.new_thread(guild.id, cid, str(body.get("name") or "thread"), self.world.bot.id, mid)
        guild.channel_ids[thread["name"]] = mid
        await self._echo("THREAD_CREATE", {**thread, "newly_created": True})
        return json_response(thread, status=201)

    # -- interactions and webhooks --

    def _interaction_for(self, app_id: str, token: str) -> InteractionRecord:
        record = next((r for r in self.world.interactions.values() if r.token == token), None)
        if record is None or app_id != str(self.world.application_id):
            raise ApiError(404, 10015, "Unknown Webhook")
        return record

    def _response_message(self, record: InteractionRecord, payload: JSON, files: Sequence[UploadedFile],
                          *, loading: bool = False) -> JSON:
        user = record.payload.get("member", {}).get("user") or record.payload.get("user") or {}
        metadata = {"id": str(record.id), "type": record.type, "user": user,
                    "authorizing_integration_owners": record.payload.get("authorizing_integration_owners", {})}
        if record.original_message_id is not None:
            metadata["original_response_message_id"] = str(record.original_message_id)
        flags = int(payload.get("flags") or 0) | (MsgFlag.LOADING if loading else 0)
        msg_type = MessageType.CHAT_INPUT_COMMAND if record.type == 2 and record.original_message_id is None else 0
        return self.world.new_message(
            record.channel_id, self.world.bot, str(payload.get("content") or ""),
            attachments=self._attachments_from(record.channel_id, payload, files),
            embeds=payload.get("embeds") or [], components=payload.get("components") or [], flags=flags,
            msg_type=msg_type, extra={"webhook_id": str(self.world.application_id),
                                      "application_id": str(self.world.application_id),
                                      "interaction_metadata": metadata})

    async def _echo_new(self, message: JSON) -> None:
        if not message["flags"] & MsgFlag.EPHEMERAL:
            await self._echo("MESSAGE_CREATE", self.world.event_payload(message))

    async def _callback(self, request: web.Request) -> web.Response:
        iid = self._snowflake(request, "interaction_id")
        record = self.world.interactions.get(iid)
        if record is None or record.token != request.match_info["token"]:
            raise ApiError(404, 10062, "Unknown interaction")
        if record.callbacks:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        now = time.monotonic()
        if now - record.dispatched_at > self.callback_deadline_s:
            record.late_callbacks += 1
            raise ApiError(404, 10062, "Unknown interaction")
        body, files = self._json(request), request[BODY].files
        kind, data = int(body.get("type", 0)), body.get("data") or {}
        message: JSON | None = None
        if kind in (4, 5):
            if kind == 4:
                self._validate(data, files, creating=True)
            message = self._response_message(record, data, files, loading=kind == 5)
            record.original_message_id = int(message["id"])
            await self._echo_new(message)
        elif kind in (6, 7):
            if record.message_id is None:
                raise ApiError(400, 40043, "Interaction callback type is not valid for this interaction")
            record.original_message_id = record.message_id
            if kind == 7:
                message = self.world.edit_message(record.message_id, data,
                                                  self._attachments_from(record.channel_id, data, files))
                await self._echo("MESSAGE_UPDATE", self.world.event_payload(message))
        elif kind not in (8, 9):
            raise ApiError.invalid_form("type", "BASE_TYPE_CHOICES", f"Value must be one of (4, 5, 6, 7, 8, 9): {kind}")
        record.callbacks.append(Callback(kind, data, now))
        if not _truthy(request.query.get("with_response")):
            return web.Response(status=204, headers={"Via": "1.1 google"})
        interaction: JSON = {"id": str(record.id), "type": record.type,
                             "response_message_loading": kind == 5,
                             "response_message_ephemeral": bool(int(data.get("flags") or 0) & MsgFlag.EPHEMERAL)}
        response: JSON = {"interaction": interaction}
        if message is not None:
            interaction["response_message_id"] = message["id"]
            response["resource"] = {"type": kind, "message": message}
        elif kind in (8, 9):
            response["resource"] = {"type": kind}
        return json_response(response)

    async def _webhook_send(self, request: web.Request) -> web.Response:
        record = self._interaction_for(request.match_info["app_id"], request.match_info["token"])
        if not record.callbacks:  # a follow-up before the interaction was acknowledged
            raise ApiError(404, 10015, "Unknown Webhook")
        payload, files = self._json(request), request[BODY].files
        self._validate(payload, files, creating=True)
        message = self._response_message(record, payload, files)
        record.followup_ids.append(int(message["id"]))
        await self._echo_new(message)
        if _truthy(request.query.get("wait")):
            return json_response(message)
        return web.Response(status=204, headers={"Via": "1.1 google"})

    def _webhook_message(self, request: web.Request) -> tuple[InteractionRecord, int]:
        record = self._interaction_for(request.match_info["app_id"], request.match_info["token"])
        raw = request.match_info["message_id"]
        mid = record.original_message_id if raw == "@original" else self._snowflake(request, "message_id")
        if mid is None or (mid not in record.followup_ids and mid != record.original_message_id):
            raise ApiError(404, 10008, "Unknown Message")
        self.world.message(mid)
        return record, mid

    async def _webhook_get(self, request: web.Request) -> web.Response:
        _, mid = self._webhook_message(request)
        return json_response(self.world.message(mid))

    async def _webhook_edit(self, request: web.Request) -> web.Response:
        record, mid = self._webhook_message(request)
        payload, files = self._json(request), request[BODY].files
        self._validate(payload, files, creating=False)
        message = self.world.edit_message(mid, payload, self._attachments_from(record.channel_id, payload, files))
        if not message["flags"] & MsgFlag.EPHEMERAL:
            await self._echo("MESSAGE_UPDATE", self.world.event_payload(message))
        return json_response(message)

    async def _webhook_delete(self, request: web.Request) -> web.Response:
        _, mid = self._webhook_message(request)
        await self._delete(self.world.message(mid))
        return web.Response(status=204, headers={"Via": "1.1 google"})

    # -- application commands --

    def _command_scope(self, request: web.Request) -> int | None:
        if request.match_info["app_id"] != str(self.world.application_id):
            raise ApiError(403, 50001, "Missing Access")
        if "guild_id" not in request.match_info:
            return None
        gid = self._snowflake(request, "guild_id")
        if not any(g.id == gid for g in self.world.guilds):
            raise ApiError(403, 50001, "Missing Access")
        return gid

    async def _sync_commands(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        return json_response(self.commands.overwrite(scope, request[BODY].json))

    async def _get_commands(self, request: web.Request) -> web.Response:
        return json_response(self.commands.scopes.get(self._command_scope(request), []))


# -- building events ----------------------------------------------------------------------------------------


class Events:
    """Builders for the payloads users cause: MESSAGE_CREATE and INTERACTION_CREATE. They store what they build."""

    def __init__(self, world: World, commands: Commands, *, upload_limit: int) -> None:
        self.world = world
        self.commands = commands
        self.upload_limit = upload_limit

    def _author(self, author: int | str | None) -> User:
        if author is None:
            return next(u for u in self.world.users.values() if not u.bot)
        return self.world.user(author)

    def message(self, content: str = "", *, channel_id: int | None = None, author: int | str | None = None,
                attachments: Sequence[Upload] = (), reply_to: int | None = None, mention_author: bool = True,
                flags: int = 0, embeds: Sequence[JSON] = ()) -> JSON:
        """A MESSAGE_CREATE payload from a user (default: the first non-bot user) in a guild channel or thread
        (default: the first guild's first text channel), or in a DM channel. `<@id>` in content become mentions."""
        world = self.world
        user = self._author(author)
        cid = channel_id if channel_id is not None else world.guilds[0].text_channel_id
        stored = [world.attachment(cid, upload) for upload in attachments]
        message = world.new_message(cid, user, content, attachments=stored, embeds=embeds, flags=flags,
                                    reply_to=reply_to, mention_author=mention_author)
        channel = world.channel(cid)
        if channel["type"] == ChannelType.PUBLIC_THREAD:
            channel["message_count"] += 1
            channel["total_message_sent"] += 1
            message["position"] = channel["message_count"] - 1
        return world.event_payload(message)

    def dm(self, content: str = "", *, author: int | str | None = None, attachments: Sequence[Upload] = (),
           reply_to: int | None = None, flags: int = 0) -> JSON:
        """A MESSAGE_CREATE in the user's DM channel with the bot (no guild_id; discord.py builds a DMChannel)."""
        user = self._author(author)
        cid = int(self.world.dm_channel(user.id)["id"])
        return self.message(content, channel_id=cid, author=user.id, attachments=attachments, reply_to=reply_to,
                            flags=flags)

    def voice_message(self, audio: bytes, *, duration_secs: float = 1.5, waveform: bytes | None = None,
                      channel_id: int | None = None, author: int | str | None = None, dm: bool = False) -> JSON:
        """A voice message: flag IS_VOICE_MESSAGE, no content, one audio/ogg attachment with duration and waveform."""
        upload = Upload("voice-message.ogg", audio, "audio/ogg", duration_secs=duration_secs,
                        waveform=waveform if waveform is not None else bytes(range(0, 256, 4)))
        if dm:
            return self.dm("", author=author, attachments=[upload], flags=MsgFlag.IS_VOICE_MESSAGE)
        return self.message("", channel_id=channel_id, author=author, attachments=[upload],
                            flags=MsgFlag.IS_VOICE_MESSAGE)

    def _interaction(self, kind: int, data: JSON, *, user: User, channel_id: int | None, dm: bool,
                     locale: str, message: JSON | None = None) -> InteractionRecord:
        world = self.world
        if dm:
            channel = world.dm_channel(user.id)
        else:
            channel = world.channel(channel_id if channel_id is not None else world.guilds[0].text_channel_id)
        cid = int(channel["id"])
        guild = world.guild_of(cid)
        iid = world.ids.next()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(64)
        payload: JSON = {
            "id": str(iid), "application_id": str(world.application_id), "type": kind, "data": data,
            "token": token, "version": 1, "locale": locale, "entitlements": [],
            "channel_id": str(cid), "attachment_size_limit": self.upload_limit,
        }
        if guild is not None:
            member = world.member_payload(guild, user.id)
            member["permissions"] = str(world.permissions_of(guild, user.id))
            payload.update({
                "guild_id": str(guild.id), "guild_locale": guild.locale, "member": member,
                "guild": {"id": str(guild.id), "locale": guild.locale, "features": []},
                "app_permissions": str(world.permissions_of(guild, world.bot.id)),
                "authorizing_integration_owners": {"0": str(guild.id)}, "context": 0,
                "channel": {k: channel[k] for k in ("id", "type", "name", "guild_id", "parent_id", "flags",
                                                    "nsfw", "position", "permission_overwrites",
                                                    "rate_limit_per_user", "last_message_id", "topic",
                                                    "thread_metadata", "owner_id") if k in channel}
                | {"permissions": str(world.permissions_of(guild, user.id))},
            })
        else:
            payload.update({
                "user": user.payload(), "app_permissions": str(Perm.BOT_DEFAULT), "context": 1,
                "authorizing_integration_owners": {"0": "0"},
                "channel": {"id": str(cid), "type": ChannelType.DM, "last_message_id": channel.get("last_message_id"),
                            "flags": 0, "recipients": [user.payload()]},
            })
        if message is not None:
            payload["message"] = copy.deepcopy(message)
        record = InteractionRecord(id=iid, token=token, type=kind, payload=payload, channel_id=cid,
                                   guild_id=guild.id if guild else None, dispatched_at=time.monotonic(),
                                   message_id=int(message["id"]) if message is not None else None)
        world.interactions[iid] = record
        return record

    def _option(self, name: str, value: Any, declared: JSON | None, channel_id: int, resolved: JSON) -> JSON:
        kind = declared.get("type") if declared else None
        if isinstance(value, Upload):
            attachment = self.world.attachment(channel_id, value)
            resolved.setdefault("attachments", {})[attachment["id"]] = attachment
            return {"name": name, "type": OPTION_TYPES["attachment"], "value": attachment["id"]}
        if kind is None:
            kind = (OPTION_TYPES["boolean"] if isinstance(value, bool) else OPTION_TYPES["integer"]
                    if isinstance(value, int) else OPTION_TYPES["number"] if isinstance(value, float)
                    else OPTION_TYPES["string"])
        if kind == OPTION_TYPES["user"]:
            user = self.world.user(value)
            resolved.setdefault("users", {})[str(user.id)] = user.payload()
            value = str(user.id)
        return {"name": name, "type": kind, "value": value}

    def command(self, name: str, options: Mapping[str, Any] | None = None, *, subcommand: str | None = None,
                user: int | str | None = None, channel_id: int | None = None, dm: bool = False,
                locale: str = "en-US") -> InteractionRecord:
        """An INTERACTION_CREATE (type 2) for a chat-input command. Option types come from the synced command when
        known, else from the Python value; an `Upload` value becomes an attachment option resolved in
        `data.resolved.attachments`. A command synced to the guild gets `data.guild_id`, as discord.py expects."""
        author = self._author(user)
        cid = (int(self.world.dm_channel(author.id)["id"]) if dm
               else channel_id if channel_id is not None else self.world.guilds[0].text_channel_id)
        guild = None if dm else self.world.guild_of(cid)
        synced = self.commands.find(name, guild.id if guild else None)
        declared_list = (synced or {}).get("options") or []
        if subcommand is not None:
            sub: JSON = next((o for o in declared_list if o.get("name") == subcommand), {})
            declared_list = sub.get("options") or []
        declared = {o["name"]: o for o in declared_list}
        resolved: JSON = {}
        built = [self._option(k, v, declared.get(k), cid, resolved) for k, v in (options or {}).items()]
        if subcommand is not None:
            built = [{"name": subcommand, "type": OPTION_TYPES["subcommand"], "options": built}]
        data: JSON = {"id": synced["id"] if synced else str(self.world.ids.next()), "name": name, "type": 1,
                      "options": built}
        if resolved:
            data["resolved"] = resolved
        if synced is not None and synced.get("guild_id"):
            data["guild_id"] = synced["guild_id"]
        return self._interaction(2, data, user=author, channel_id=cid, dm=dm, locale=locale)

    def component(self, message_id: int, custom_id: str, *, component_type: int = 2,
                  values: Sequence[str] | None = None, user: int | str | None = None,
                  locale: str = "en-US") -> InteractionRecord:
        """An INTERACTION_CREATE (type 3) for a click on (or select in) a component of a stored message."""
        message = self.world.message(message_id)
        data: JSON = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = list(values)
        cid = int(message["channel_id"])
        dm = self.world.channel(cid)["type"] == ChannelType.DM
        return self._interaction(3, data, user=self._author(user), channel_id=cid, dm=dm, locale=locale,
                                 message=message)


# -- the stand-in -------------------------------------------------------------------------------------------


class DiscordStub:
    """The gateway and REST API on one loopback port. Use as `async with DiscordStub(...) as stub:`."""

    def __init__(self, *, guilds: Sequence[GuildSpec] | None = None, users: Sequence[str] = ("alice", "bob"),
                 bot_name: str = "teambot", token: str | None = None, heartbeat_interval_ms: int = 41250,
                 compression: Literal["auto", "off"] = "auto", privileged_intents: int = Intent.PRIVILEGED,
                 callback_deadline_s: float = 3.0, echo_own_messages: bool = True,
                 upload_limit: int = 10 * 1024 * 1024, host: str = "127.0.0.1") -> None:
        self.host = host
        self.notifier = Notifier()
        self.world = World(bot_name=bot_name, users=users, guilds=[GuildSpec()] if guilds is None else guilds)
        self.commands = Commands(self.world.ids, self.world.application_id)
        self.gateway = Gateway(self.world, self.notifier, heartbeat_interval_ms=heartbeat_interval_ms,
                               compression=compression, token=token, privileged_intents=privileged_intents)
        self.rest = RestApi(self.world, self.gateway, self.commands, self.notifier, token=token,
                            callback_deadline_s=callback_deadline_s, echo_own_messages=echo_own_messages,
                            upload_limit=upload_limit)
        self.events = Events(self.world, self.commands, upload_limit=upload_limit)
        self.url = ""
        self._runner: web.AppRunner | None = None

    # -- lifecycle --

    async def start(self) -> DiscordStub:
        app = web.Application(middlewares=[self.rest.middleware], client_max_size=self.rest.upload_limit + 2**20)
        app.add_routes([web.get("/gateway", self.gateway.handle), web.get("/gateway-resume", self.gateway.handle),
                        *self.rest.routes()])
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        self.world.base_url = self.url
        self.gateway.url = f"ws://{host}:{port}/gateway"
        self.gateway.resume_url = f"ws://{host}:{port}/gateway-resume"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self.gateway.close_all()
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DiscordStub:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def api_url(self) -> str:
        """What `discord.http.Route.BASE` must be."""
        return self.url + API_PREFIX

    def patch_discord(self) -> contextlib.AbstractContextManager[None]:
        return patch_discord(self)

    # -- the world, shortcuts --

    @property
    def bot(self) -> User:
        return self.world.bot

    @property
    def application_id(self) -> int:
        return self.world.application_id

    @property
    def guild(self) -> Guild:
        return self.world.guilds[0]

    @property
    def channel_id(self) -> int:
        """The first guild's first text channel."""
        return self.guild.text_channel_id

    @property
    def thread_id(self) -> int:
        if self.guild.thread_id is None:
            raise LookupError("the first guild has no thread")
        return self.guild.thread_id

    def user(self, who: int | str) -> User:
        return self.world.user(who)

    @property
    def requests(self) -> list[Recorded]:
        return self.rest.requests

    @property
    def interactions(self) -> dict[int, InteractionRecord]:
        return self.world.interactions

    def requests_to(self, method: str, path: str) -> list[Recorded]:
        """Recorded API requests with this method whose path `re.search`-matches."""
        return [r for r in self.rest.requests if r.method == method and re.search(path, r.path)]

    def sent_messages(self, channel_id: int | None = None) -> list[JSON]:
        """Messages the bot created (channel messages and interaction responses), deleted ones excluded."""
        bot = str(self.bot.id)
        return [m for m in self.world.messages.values() if m["author"]["id"] == bot
                and (channel_id is None or m["channel_id"] == str(channel_id))]

    def edits(self, message_id: int) -> list[JSON]:
        """The earlier versions of a message, oldest first (the current one is `world.messages[id]`)."""
        return self.world.edits.get(message_id, [])

    def fail_next(self, method: str, path: str, status: int = 429, retry_after: float = 0.2, global_: bool = False,
                  *, times: int = 1, code: int | None = None, message: str | None = None) -> Fault:
        """Answers the next `times` matching requests with an error (`path` is a regex on the /api/v10-relative
        path; method "*" matches any). 429s carry Discord's body and X-RateLimit headers; other statuses Discord's
        `{"code", "message"}` (403 -> 50013 Missing Permissions unless `code`/`message` say otherwise).
        Note discord.py retries 500/502/504 itself after sleeping 1 s, 3 s, ... (up to 5 tries)."""
        fault = Fault(method.upper(), path, status, retry_after, global_, code, message, times)
        self.rest.faults.append(fault)
        return fault

    # -- waiting --

    async def wait_until(self, predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
        return await self.notifier.wait_until(predicate, timeout, what)

    async def wait_for_request(self, method: str, path: str, *, count: int = 1, timeout: float = 5.0) -> Recorded:
        """The `count`-th recorded request matching (see `requests_to`), once it has been answered."""
        def found() -> Recorded | None:
            matching = [r for r in self.requests_to(method, path) if r.status is not None]
            return matching[count - 1] if len(matching) >= count else None
        result: Recorded = await self.wait_until(found, timeout, f"{count}x {method} {path}")
        return result

    async def wait_for_callback(self, record: InteractionRecord, timeout: float = 5.0) -> Callback:
        result: Callback = await self.wait_until(lambda: record.callback, timeout, f"callback of {record.id}")
        return result

    async def wait_identified(self, count: int = 1, timeout: float = 5.0) -> None:
        await self.wait_until(lambda: self.gateway.session is not None and self.gateway.identify_count >= count,
                              timeout, f"{count} IDENTIFY")

    # -- causing events --

    async def dispatch(self, event: str, data: JSON) -> int | None:
        """Sends any dispatch (op 0) on the current session; see `Gateway.dispatch`."""
        return await self.gateway.dispatch(event, data)

    async def disconnect(self, code: int | None = 4000, *, resumable: bool | None = None) -> None:
        """Drops the gateway connection (code=None: abruptly); discord.py then RESUMEs."""
        await self.gateway.disconnect(code, resumable=resumable)

    async def user_message(self, content: str = "", **kwargs: Any) -> JSON:
        """Dispatches `events.message(...)` as MESSAGE_CREATE and returns the payload."""
        payload = self.events.message(content, **kwargs)
        await self.dispatch("MESSAGE_CREATE", payload)
        return payload

    async def dm_message(self, content: str = "", **kwargs: Any) -> JSON:
        payload = self.events.dm(content, **kwargs)
        await self.dispatch("MESSAGE_CREATE", payload)
        return payload

    async def voice_message(self, audio: bytes, **kwargs: Any) -> JSON:
        payload = self.events.voice_message(audio, **kwargs)
        await self.dispatch("MESSAGE_CREATE", payload)
        return payload

    async def slash_command(self, name: str, options: Mapping[str, Any] | None = None,
                            **kwargs: Any) -> InteractionRecord:
        """Dispatches an application-command INTERACTION_CREATE (see `Events.command`)."""
        record = self.events.command(name, options, **kwargs)
        record.dispatched_at = time.monotonic()
        await self.dispatch("INTERACTION_CREATE", record.payload)
        return record

    async def click(self, message_id: int, custom_id: str, **kwargs: Any) -> InteractionRecord:
        """Dispatches a component INTERACTION_CREATE (see `Events.component`)."""
        record = self.events.component(message_id, custom_id, **kwargs)
        record.dispatched_at = time.monotonic()
        await self.dispatch("INTERACTION_CREATE", record.payload)
        return record


@contextlib.contextmanager
def patch_discord(stub: DiscordStub) -> Iterator[None]:
    """Points discord.py (process-wide) at the stand-in for the block: the REST base `Route.BASE` (also used by
    webhooks and interaction callbacks) and the gateway `DiscordWebSocket.DEFAULT_GATEWAY`. Restored afterwards.
    Keep it active for the client's whole life: each request reads Route.BASE when it is built."""
    from discord.gateway import DiscordWebSocket
    from discord.http import Route
    from yarl import URL

    if not stub.url:
        raise RuntimeError("start the stub first")
    saved = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    Route.BASE = stub.api_url
    DiscordWebSocket.DEFAULT_GATEWAY = URL(stub.gateway.url)
    try:
        yield
    finally:
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved


@contextlib.asynccontextmanager
async def running_client(stub: DiscordStub, client: discord.Client, token: str = "test-token",
                         ready_timeout: float = 10.0) -> AsyncIterator[discord.Client]:
    """Runs `client.start(token)` against the stand-in until on_ready has fired; closes it afterwards.

    Build the client with a small `guild_ready_timeout` (e.g. 0.05) or on_ready waits 2 s after the guilds."""
    with patch_discord(stub):
        task = asyncio.create_task(client.start(token))
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + ready_timeout
            while not client.is_ready():
                if task.done():
                    task.result()  # raises what start() raised
                    raise RuntimeError("client.start() returned before the client became ready")
                if loop.time() > deadline:
                    raise TimeoutError(f"discord client not ready after {ready_timeout}s")
                await asyncio.sleep(0.01)
            yield client
        finally:
            await client.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 5.0)
