"""Runs one event through the middleware chain to its handler and turns errors into replies."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from bot.context import EventLog, HandlerContext, Services
from bot.errors import (
    EngineBusy,
    EngineError,
    EngineUnavailable,
    JobTimeout,
    UnknownEngine,
    UserFacingError,
)
from bot.events import IncomingEvent
from bot.messages import t
from bot.middleware import Middleware, Next
from bot.responder import Responder

log = logging.getLogger("bot.events")


class Dispatcher:
    """The router's runtime half: middleware, handler, error replies, metrics."""

    def __init__(self, services: Services, middleware: Sequence[Middleware]) -> None:
        self.services = services
        self.middleware = list(middleware)

    async def handle(self, event: IncomingEvent, responder: Responder) -> None:
        services = self.services
        ctx = HandlerContext(
            services=services,
            responder=responder,
            log=EventLog(log, {"event_id": event.event_id}),
            locale=services.settings.default_locale,
        )
        services.metrics.events.labels(event.platform, event.kind.value).inc()
        started = time.perf_counter()
        name = event.kind.value

        async def run_handler() -> None:
            # Resolved inside the chain so unknown commands are deduplicated and rate limited too.
            nonlocal name
            handler, command = services.router.resolve(event)
            ctx.command = command
            if command is not None:
                name = command.name
                if command.role == "admin" and (ctx.identity is None or ctx.identity.role != "admin"):
                    raise UserFacingError("forbidden", command=command.name)
                if event.args:
                    ctx.state["args"] = services.router.coerce(command, event.args, event.attachments)
                else:
                    ctx.state["args"] = services.router.parse_args(command, event.text, event.attachments)
            await handler(event, ctx)

        try:
            await self._chain(event, ctx, run_handler)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the one default handler of this layer
            await self._report(e, event, ctx)
        finally:
            services.metrics.handler_seconds.labels(name).observe(time.perf_counter() - started)

    async def _chain(self, event: IncomingEvent, ctx: HandlerContext, handler: Next) -> None:
        async def step(i: int) -> None:
            if i == len(self.middleware):
                await handler()
            else:
                await self.middleware[i](event, ctx, lambda: step(i + 1))

        await step(0)

    async def _report(self, e: Exception, event: IncomingEvent, ctx: HandlerContext) -> None:
        ref = event.event_id[-8:]
        engine = getattr(e, "engine", None) or "?"
        metrics = self.services.metrics
        if isinstance(e, UserFacingError):
            text = t(e.key, ctx.locale, **e.params)
            where = "user"
        elif isinstance(e, EngineBusy):
            text, where = t("engine_busy", ctx.locale, engine=engine), "busy"
        elif isinstance(e, JobTimeout):
            seconds = getattr(e, "timeout", "?")
            text, where = t("job_timeout", ctx.locale, engine=engine, seconds=seconds), "timeout"
        elif isinstance(e, EngineUnavailable | UnknownEngine):
            text, where = t("engine_unavailable", ctx.locale, engine=engine, ref=ref), "engine"
            ctx.log.warning("engine %s unavailable: %s", engine, e)
        elif isinstance(e, EngineError):
            text, where = t("engine_failed", ctx.locale, engine=engine, ref=ref), "engine"
            ctx.log.warning("engine %s failed: %s", engine, e)
        else:
            text, where = t("internal_error", ctx.locale, ref=ref), "internal"
            ctx.log.exception("handler failed for %s event", event.kind.value)
        metrics.errors.labels(where).inc()
        try:
            await ctx.responder.error(text)
        except Exception:
            ctx.log.exception("could not deliver the error reply")

