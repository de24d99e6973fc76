"""The composition root: Settings -> Store -> EnginePool -> Router -> adapters, and shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiohttp import web

from bot.adapters.web import WebAdapter
from bot.context import Services
from bot.dispatch import Dispatcher
from bot.metrics import Metrics
from bot.middleware import default_chain
from bot.ops import OpsRoutes
from bot.router import Router
from bot.settings import Settings
from bot.tasks import TaskTracker
from engines.pool import create_pool
from handlers import build_router
from storage.db import Store

log = logging.getLogger(__name__)


@dataclass
class RunningApp:
    """A started service: its parts, its address, and `stop()`."""

    services: Services
    runner: web.AppRunner
    web: WebAdapter
    platforms: list[Any]
    host: str
    port: int
    housekeeping: asyncio.Task[None] | None = None
    stopped: bool = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self, drain_timeout: float = 30.0) -> None:
        """Stop taking events, let in-flight work finish (up to the timeout), then close. Idempotent."""
        if self.stopped:
            return
        self.stopped = True
        services = self.services
        if self.housekeeping is not None:
            self.housekeeping.cancel()
        cancelled = await services.tasks.drain(drain_timeout)
        if cancelled:
            log.warning("shutdown cancelled %d unfinished tasks", cancelled)
        for platform in self.platforms:
            await platform.close()
        await services.pool.close(drain_timeout)
        await self.web.close()
        await self.runner.cleanup()
        await services.store.close()
        log.info("stopped")


async def start(settings: Settings, register: Sequence[Callable[[Router], None]] = ()) -> RunningApp:
    """Build everything from `settings` and start serving HTTP.

    `register` adds handlers beyond the built-in features (benchmarks, tests, plugins).
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = await Store.open(settings)
    metrics = Metrics()
    pool = create_pool(settings.engines, settings.pool, store.jobs, metrics)
    await pool.start()
    tasks = TaskTracker()
    router = build_router()
    for extra in register:
        extra(router)
    services = Services(settings=settings, store=store, pool=pool, router=router, metrics=metrics, tasks=tasks)
    dispatcher = Dispatcher(services, default_chain(settings.access, settings.rate_limit))
    services.dispatch = dispatcher.handle
    app = web.Application(client_max_size=settings.limits.max_upload_bytes + 2**20)
    web_adapter = WebAdapter(services, dispatcher.handle, tasks)
    web_adapter.routes(app)
    OpsRoutes(services).routes(app)
    platforms = platform_adapters(services, dispatcher.handle, tasks)
    for platform in platforms:
        platform.routes(app)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, settings.server.host, settings.server.port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    port = int(sockets[0].getsockname()[1]) if sockets else settings.server.port
    log.info("serving the web chat on http://%s:%s", settings.server.host, port)
    running = RunningApp(services=services, runner=runner, web=web_adapter, platforms=platforms,
                         host=settings.server.host, port=port, housekeeping=asyncio.create_task(housekeeping(store)))
    try:
        for platform in platforms:
            await platform.start()
    except BaseException:
        await running.stop(drain_timeout=1)
        raise
    return running


async def housekeeping(store: Store, every_s: float = 3600.0) -> None:
    """Forget delivery ids older than a day (retries come within minutes; an hour is the floor)."""
    while True:
        try:
            removed = await store.events.prune(timedelta(days=1))
            if removed:
                log.info("pruned %d old event ids", removed)
        except Exception:  # housekeeping must never stop the service
            log.exception("housekeeping failed")
        await asyncio.sleep(every_s)


def platform_adapters(services: Services, dispatch: Any, tasks: TaskTracker) -> list[Any]:
    """The chat platforms whose credentials are configured (imported only then)."""
    settings = services.settings
    adapters: list[Any] = []
    slack_oauth = settings.slack.client_id is not None and settings.secrets.slack_client_secret is not None
    if settings.slack.enabled and (settings.secrets.slack_bot_token is not None or slack_oauth):
        from bot.adapters.slack import SlackAdapter

        adapters.append(SlackAdapter(services, dispatch, tasks))
    if settings.discord.enabled and settings.secrets.discord_bot_token is not None:
        from bot.adapters.discord import DiscordAdapter

        adapters.append(DiscordAdapter(services, dispatch, tasks))
    return adapters


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain and stop."""
    running = await start(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received: draining in-flight work")
    await running.stop()
