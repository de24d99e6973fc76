"""The chain every event passes before its handler.

Order: dedupe -> ignore self and bots -> identify -> access -> rate limit -> moderation.
Each step is `async (event, ctx, next)`; a step that stops the event simply does not call next.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from bot import moderation
from bot.context import HandlerContext
from bot.errors import RateLimited, UserFacingError
from bot.events import EventKind, IncomingEvent
from bot.messages import normalize_locale
from bot.responder import BaseResponder
from bot.settings import AccessSettings, RateLimitSettings
from bot.suggestions import suggestion_buttons

log = logging.getLogger(__name__)

Next = Callable[[], Awaitable[None]]


class Middleware(Protocol):
    async def __call__(self, event: IncomingEvent, ctx: HandlerContext, call_next: Next) -> None: ...


class Dedupe:
    """Drops a platform event id seen before (retried deliveries), using PostgreSQL."""

    async def __call__(self, event: IncomingEvent, ctx: HandlerContext, call_next: Next) -> None:
        if not await ctx.store.events.claim(event.platform, event.event_id):
            ctx.log.info("duplicate delivery dropped")
            ctx.services.metrics.dropped.labels("duplicate").inc()
            return
        await call_next()


class IgnoreBots:
    """The bot's own messages and other bots' never reach a handler."""

    async def __call__(self, event: IncomingEvent, ctx: HandlerContext, call_next: Next) -> None:
        if event.from_self or event.from_bot:
            ctx.services.metrics.dropped.labels("bot").inc()
            return
        await call_next()


class Identify:
    """Resolves workspace, channel and user rows and picks the reply language."""

    async def __call__(self, event: IncomingEvent, ctx: HandlerContext, call_next: Next) -> None:
        identity = await ctx.store.identity.ensure(
            event.platform, event.workspace_id, event.channel_id, event.user_id,
            user_name=event.user_name, is_dm=event.is_dm,
        )
        admins = ctx.settings.access.admins
        if identity.role != "admin" and f"{event.platform}:{event.user_id}" in admins:
            await ctx.store.identity.set_role(identity.user_pk, "admin")
            identity = dataclasses.replace(identity, role="admin")
        ctx.identity = identity
        ctx.locale = (
            normalize_locale(event.locale)
            or normalize_locale(identity.user_locale)
            or normalize_locale(identity.workspace_locale)
            or ctx.settings.default_locale
        )
        await call_next()


@dataclass
class Access:
    """Allow and deny lists of users and channels; `platform:id` or a bare id match."""

    rules: AccessSettings

    @staticmethod
    def _match(names: list[str], platform: str, ident: str) -> bool:
        return ident in names or f"{platform}:{ident}" in names

    async def __call__(self, event: IncomingEvent, ctx: HandlerContext, call_next: Next) -> None:
        r = self.rules
        user, channel, p = event.user_id, event.channel_id, event.platform
        denied = (
            self._match(r.deny_users, p, user)
            or self._match(r.deny_channels, p, channel)
            or (r.allow_users and not self._match(r.allow_users, p, user))
            or (r.allow_channels and not event.is_dm and not self._match(r.allow_channels, p, channel))
        )
        if denied:
            ctx.services.metrics.dropped.labels("access").inc()
            ctx.log.info("access denied for user %s in channel %s", user, channel)
            if event.kind == EventKind.COMMAND or event.is_dm:
                raise UserFacingError("access_denied")
            return
        await call_next()


class RateLimit:
    """A token bucket per user: `per_user_per_minute` refill, `burst` capacity."""

    def __init__(self, rules: RateLimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rules.per_user_per_minute / 60.0
        self.burst = float(rules.burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0 if allowed, else seconds until the next token."""
        now = self.clock()
        tokens, stamp = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > 100_000:
                self._prune(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        full_after = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}

    async def __call__(self, event: IncomingEvent, ctx: HandlerContext, call_next: Next) -> None:
        if event.kind == EventKind.ACTION and (event.action_id or "").startswith("feedback"):
            await call_next()
            return
        wait = self.take(f"{event.platform}:{event.workspace_id}:{event.user_id}")
        if wait > 0:
            ctx.services.metrics.dropped.labels("rate_limit").inc()
            raise RateLimited("rate_limited", seconds=max(1, round(wait)))
        await call_next()


class Greet:
    """First contact: a short greeting with suggested prompts as buttons, before the reply."""

    async def __call__(self, event: IncomingEvent, ctx: HandlerContext, call_next: Next) -> None:
        if ctx.identity is not None and ctx.identity.is_new_user and event.kind != EventKind.ACTION:
            name = f" {event.user_name}" if event.user_name else ""
            await ctx.responder.send(ctx.t("greeting", name=name), buttons=suggestion_buttons(ctx))
            ctx.state["greeted"] = True
        await call_next()


class Moderation:
    """The moderation gate: muted users are stopped; what people type is checked against the policy
    (bypass roles excepted) before any handler runs; the bot's replies are checked as they are shown."""

    async def __call__(self, event: IncomingEvent, ctx: HandlerContext, call_next: Next) -> None:
        settings = ctx.settings.moderation
        if not settings.enabled or ctx.identity is None:
            await call_next()
            return
        bypass = moderation.bypassed(ctx)
        until = None if bypass else await moderation.muted_until(ctx, event)
        if until is not None:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(until)) if until else ctx.t("mute_forever")
            raise UserFacingError("muted", until=when)
        if settings.check_replies and isinstance(ctx.responder, BaseResponder):
            ctx.responder.guard = moderation.reply_guard(ctx, event)
            ctx.responder.guard_every = settings.check_every_chars
        if not bypass and event.kind in (EventKind.MESSAGE, EventKind.COMMAND) and event.text.strip():
            await moderation.enforce(ctx, event, event.text, "message")
        await call_next()


def default_chain(access: AccessSettings, rate: RateLimitSettings) -> list[Middleware]:
    return [Dedupe(), IgnoreBots(), Identify(), Access(access), Greet(), RateLimit(rate), Moderation()]
