"""Operator endpoints: /healthz (database and engines) and /metrics (Prometheus)."""

from __future__ import annotations

import dataclasses

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.context import Services


class OpsRoutes:
    def __init__(self, services: Services) -> None:
        self.services = services

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)

    async def healthz(self, request: web.Request) -> web.Response:
        try:
            db_s = await self.services.store.ping()
            database = {"status": "up", "latency_ms": round(db_s * 1000, 2)}
        except Exception as e:  # report, don't raise: health must answer
            database = {"status": "down", "error": type(e).__name__}
        engines = {name: dataclasses.asdict(h) for name, h in self.services.pool.health().items()}
        engines_ok = all(h.get("state") != "failed" for h in engines.values())
        ok = database["status"] == "up" and engines_ok
        body = {"status": "ok" if ok else "degraded", "database": database, "engines": engines}
        return web.json_response(body, status=200 if database["status"] == "up" else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        pool = self.services.pool
        for name in pool.health():
            self.services.metrics.queue_depth.labels(name).set(pool.queue_depth(name))
        return web.Response(body=self.services.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
