"""Slack on slack-bolt's AsyncApp: Socket Mode when SLACK_APP_TOKEN is set, else HTTP mode on the
service's own aiohttp server (every request's signature and timestamp verified by Bolt).

Listeners only translate: they ack at once, build an `IncomingEvent` and a `SlackResponder`, and
hand both to the dispatcher in a tracked task.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlparse

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.slack_responder import ChannelPacer, SlackResponder
from bot.context import Services
from bot.errors import UnsupportedInput
from bot.events import Attachment, EventKind, IncomingEvent, kind_for_attachments
from bot.responder import Responder
from bot.router import split_command
from bot.tasks import TaskTracker

log = logging.getLogger(__name__)

Dispatch = Callable[[IncomingEvent, Responder], Coroutine[Any, Any, None]]
MENTION = re.compile(r"<@[A-Z0-9]+>\s*")
IGNORED_SUBTYPES = {"message_changed", "message_deleted", "bot_message", "channel_join", "channel_leave",
                    "thread_broadcast", "message_replied"}
LOCALE_TTL_S = 3600.0
THREAD_TTL_S = 300.0


class SlackAdapter:
    """Translates Slack events, commands and button clicks to `IncomingEvent`s."""

    def __init__(self, services: Services, dispatch: Dispatch, tasks: TaskTracker) -> None:
        settings = services.settings
        secrets = settings.secrets
        self.services = services
        self.dispatch = dispatch
        self.tasks = tasks
        self.settings = settings.slack
        self.token = secrets.slack_bot_token.get_secret_value() if secrets.slack_bot_token else None
        self.app_token = secrets.slack_app_token.get_secret_value() if secrets.slack_app_token else None
        self.oauth = self.settings.client_id is not None and secrets.slack_client_secret is not None
        if self.token is None and not self.oauth:
            raise ValueError("set SLACK_BOT_TOKEN, or [slack] client_id and SLACK_CLIENT_SECRET for OAuth installs")
        retries: list[AsyncRetryHandler] = [
            AsyncRateLimitErrorRetryHandler(max_retry_count=self.settings.retry_max),
            AsyncServerErrorRetryHandler(max_retry_count=2),
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
        ]
        self.client = AsyncWebClient(token=self.token, retry_handlers=retries,
                                     base_url=self.settings.api_url or AsyncWebClient.BASE_URL)
        signing = secrets.slack_signing_secret.get_secret_value() if secrets.slack_signing_secret else None
        if self.app_token is None and signing is None:
            raise ValueError("HTTP mode needs SLACK_SIGNING_SECRET (or set SLACK_APP_TOKEN for Socket Mode)")
        oauth_flow = self._oauth_flow(services) if self.oauth and self.app_token is None else None
        self.app = AsyncApp(client=self.client, signing_secret=signing or "socket-mode", oauth_flow=oauth_flow,
                            request_verification_enabled=self.app_token is None,
                            raise_error_for_unhandled_request=False)
        self.pacer = ChannelPacer(self.settings.min_post_interval_s)
        self._working = asyncio.Semaphore(self.settings.max_concurrent_events)
        self.bot_user_id: str | None = None
        self.bot_id: str | None = None
        self._locales: dict[str, tuple[str | None, float]] = {}
        self._threads: dict[str, tuple[bool, float]] = {}
        self._http: aiohttp.ClientSession | None = None
        self._socket: Any = None
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_message)
        self.app.command(re.compile(r"^/.+"))(self._on_command)
        self.app.action(re.compile(r".+"))(self._on_action)

    def _oauth_flow(self, services: Services) -> Any:
        """Installs into many workspaces: /slack/install starts Slack's OAuth flow."""
        from slack_bolt.oauth.async_oauth_flow import AsyncOAuthFlow
        from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings

        from bot.adapters.slack_install import PgInstallationStore, PgStateStore, TokenSeal

        secret = services.settings.secrets.slack_client_secret
        assert secret is not None
        repository = services.store.installations
        base = (services.settings.server.public_url or "").rstrip("/")
        oauth = AsyncOAuthSettings(
            client_id=self.settings.client_id, client_secret=secret.get_secret_value(),
            scopes=list(self.settings.scopes), redirect_uri=f"{base}/slack/oauth_redirect" if base else None,
            installation_store=PgInstallationStore(repository, TokenSeal(secret.get_secret_value())),
            state_store=PgStateStore(repository),
        )
        return AsyncOAuthFlow(client=AsyncWebClient(base_url=self.client.base_url), settings=oauth)

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def socket_mode(self) -> bool:
        return self.app_token is not None

    def routes(self, app: web.Application) -> None:
        if not self.socket_mode:
            app.router.add_post(self.settings.events_path, self.handle_http)
            if self.app.oauth_flow is not None:
                app.router.add_get("/slack/install", self.handle_install)
                app.router.add_get("/slack/oauth_redirect", self.handle_oauth_redirect)

    async def start(self) -> None:
        self._http = aiohttp.ClientSession()
        if self.token is None:
            log.info("Slack: HTTP mode for OAuth installs (install at /slack/install)")
        else:
            auth = await self.client.auth_test()
            self.bot_user_id, self.bot_id = auth.get("user_id"), auth.get("bot_id")
            log.info("Slack: signed in as %s in %s (%s mode)", auth.get("user"), auth.get("team"),
                     "Socket Mode" if self.socket_mode else "HTTP")
        if self.socket_mode:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            self._socket = AsyncSocketModeHandler(self.app, self.app_token)
            await self._socket.connect_async()

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close_async()
        if self._http is not None:
            await self._http.close()

    async def handle_install(self, request: web.Request) -> web.Response:
        """The install page: a link to Slack's consent screen, with a one-time state."""
        assert self.app.oauth_flow is not None
        return await to_aiohttp_response(await self.app.oauth_flow.handle_installation(await to_bolt_request(request)))

    async def handle_oauth_redirect(self, request: web.Request) -> web.Response:
        """Slack sends the installer back here with a code; the installation is stored, sealed."""
        assert self.app.oauth_flow is not None
        return await to_aiohttp_response(await self.app.oauth_flow.handle_callback(await to_bolt_request(request)))

    async def handle_http(self, request: web.Request) -> web.Response:
        try:
            response = await self.app.async_dispatch(await to_bolt_request(request))
        except ValueError as e:  # a body that is not the JSON or form it claims to be
            log.warning("malformed Slack request from %s: %s", request.remote, type(e).__name__)
            return web.Response(status=400, text="malformed request")
        if response.status == 401:
            log.warning("Slack request refused: bad or stale signature from %s", request.remote)
        return await to_aiohttp_response(response)

    # -- listeners (translate only) -----------------------------------------------------------
    async def _on_mention(self, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext) -> None:
        await self._message(body, event, context)

    async def _on_message(self, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext) -> None:
        if event.get("subtype") in IGNORED_SUBTYPES or event.get("bot_id"):
            return
        if event.get("channel_type") == "im":
            await self._message(body, event, context)
            return
        if f"<@{context.bot_user_id or self.bot_user_id}>" in event.get("text", ""):
            return  # app_mention delivers it
        thread = event.get("thread_ts")
        client = context.client or self.client
        if thread and await self._bot_in_thread(client, body.get("team_id", ""), event["channel"], thread,
                                                context.bot_user_id or self.bot_user_id):
            await self._message(body, event, context)

    async def _bot_in_thread(self, client: AsyncWebClient, team: str, channel: str, thread_ts: str,
                             bot_user: str | None) -> bool:
        """Whether the bot takes part in the thread: it has a conversation for it, or (for threads
        from before this database) one of the thread's messages is the bot's. Answers are cached."""
        key = f"{team}:{channel}:{thread_ts}"
        cached = self._threads.get(key)
        if cached is not None and time.monotonic() - cached[1] < THREAD_TTL_S:
            return cached[0]
        found = await self.services.store.conversations.exists("slack", team, channel, f"{channel}:{thread_ts}")
        if not found:
            try:
                replies = await client.conversations_replies(channel=channel, ts=thread_ts, limit=50)
                messages: list[dict[str, Any]] = replies.get("messages") or []
                found = any(m.get("user") == bot_user or m.get("bot_id") == self.bot_id for m in messages)
            except Exception as e:  # unreadable thread: treat as not ours
                log.info("conversations.replies failed for %s: %s", channel, type(e).__name__)
        if len(self._threads) > 50_000:
            self._threads.clear()
        self._threads[key] = (found, time.monotonic())
        return found

    async def _message(self, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext) -> None:
        if event.get("user") in (None, self.bot_user_id, context.bot_user_id):
            return
        client = context.client or self.client
        team = body.get("team_id") or event.get("team") or ""
        is_dm = event.get("channel_type") == "im"
        thread = event.get("thread_ts") or event.get("ts")  # answers go in a thread, DMs too
        text = MENTION.sub("", event.get("text", "")).strip()
        attachments = tuple(self._attachment(f, client.token or "") for f in event.get("files", [])
                            if f.get("mode") != "tombstone")
        parsed = split_command(text)
        common = dict(platform="slack", event_id=body.get("event_id") or f"{event['channel']}:{event.get('ts')}",
                      workspace_id=team, channel_id=event["channel"], user_id=event["user"], thread_id=thread,
                      is_dm=is_dm, attachments=attachments, message_ref=event.get("ts"), raw=body)
        if parsed:
            incoming = IncomingEvent(kind=EventKind.COMMAND, command=parsed[0], text=parsed[1], **common)
        else:
            incoming = IncomingEvent(kind=kind_for_attachments(attachments), text=text, **common)
        self._spawn(incoming, client, ephemeral=False)

    async def _on_command(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        await ack()
        incoming = IncomingEvent(
            platform="slack", kind=EventKind.COMMAND, event_id=f"cmd:{body.get('trigger_id', time.time())}",
            workspace_id=body.get("team_id", ""), channel_id=body.get("channel_id", ""),
            user_id=body.get("user_id", ""), user_name=body.get("user_name"),
            command=body.get("command", "/").lstrip("/"), text=body.get("text", ""),
            is_dm=str(body.get("channel_id", "")).startswith("D"), raw=body,
        )
        self._spawn(incoming, context.client or self.client, ephemeral=True)

    async def _on_action(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        await ack()
        action = (body.get("actions") or [{}])[0]
        message = body.get("message") or {}
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id", "")
        user = (body.get("user") or {}).get("id", "")
        incoming = IncomingEvent(
            platform="slack", kind=EventKind.ACTION,
            event_id=f"act:{body.get('trigger_id') or action.get('action_ts')}",
            workspace_id=(body.get("team") or {}).get("id", ""), channel_id=channel, user_id=user,
            thread_id=message.get("thread_ts") or message.get("ts"), is_dm=channel.startswith("D"),
            action_id=str(action.get("action_id", "")).rsplit(":", 1)[0], action_value=action.get("value", ""),
            raw=body,
        )
        self._spawn(incoming, context.client or self.client, ephemeral=True)

    def _spawn(self, incoming: IncomingEvent, client: AsyncWebClient, *, ephemeral: bool) -> None:
        """Hand the event over and return at once, so Bolt acknowledges well inside 3 seconds."""
        settings = self.services.settings.responder
        responder = SlackResponder(client, incoming.channel_id, incoming.thread_id, incoming.user_id,
                                   pacer=self.pacer, ephemeral_errors=ephemeral,
                                   stream_interval_s=settings.stream_interval_s,
                                   progress_interval_s=settings.progress_interval_s)

        async def work() -> None:
            async with self._working:  # a bounded number at once, so acks keep their share of the loop
                localized = dataclasses.replace(incoming, locale=await self._locale(client, incoming.user_id))
                await self.dispatch(localized, responder)

        self.tasks.spawn(work(), name=f"slack:{incoming.event_id}")

    # -- helpers ------------------------------------------------------------------------------
    async def _locale(self, client: AsyncWebClient, user: str) -> str | None:
        """The user's Slack locale (users.info), cached for an hour; None when it cannot be read."""
        if not user:
            return None
        cached = self._locales.get(user)
        if cached and time.monotonic() - cached[1] < LOCALE_TTL_S:
            return cached[0]
        try:
            info = await client.users_info(user=user, include_locale=True)
            locale = (info.get("user") or {}).get("locale")
        except Exception as e:  # locale is a nicety: never fail an event over it
            log.info("users.info failed for %s: %s", user, type(e).__name__)
            locale = None
        if len(self._locales) > 50_000:
            self._locales.clear()
        self._locales[user] = (locale, time.monotonic())
        return locale

    def _attachment(self, file: dict[str, Any], token: str) -> Attachment:
        url = file.get("url_private_download") or file.get("url_private") or ""
        name = file.get("name") or file.get("title") or "file"

        async def fetch(limit: int) -> bytes:
            return await self._download(url, name, token, limit)

        return Attachment(name=name, mime=file.get("mimetype") or "application/octet-stream",
                          size=int(file.get("size") or 0), fetch=fetch, url=url)

    async def _download(self, url: str, name: str, token: str, limit: int) -> bytes:
        host = urlparse(url).hostname or ""
        allowed = set(self.settings.file_hosts)
        if self.settings.api_url:
            allowed.add(urlparse(self.settings.api_url).hostname or "")
        if host not in allowed:
            raise UnsupportedInput("file_download_failed", name=name, reason="not a Slack file address")
        assert self._http is not None
        async with self._http.get(url, headers={"Authorization": f"Bearer {token}"},
                                  allow_redirects=False) as resp:
            if resp.status != 200:
                raise UnsupportedInput("file_download_failed", name=name, reason=f"Slack answered {resp.status}")
            if resp.content_type == "text/html":  # Slack's sign-in page: the token was not accepted
                raise UnsupportedInput("file_download_failed", name=name, reason="Slack asked to sign in")
            data = bytearray()
            async for chunk in resp.content.iter_chunked(64 * 1024):
                data.extend(chunk)
                if len(data) > limit:
                    raise UnsupportedInput("file_too_large", name=name, limit_mb=round(limit / 2**20, 1))
        return bytes(data)
