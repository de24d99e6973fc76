"""Slack acknowledgement latency in HTTP mode: 500 signed event deliveries, 100 at a time.

The bot: the whole service (embedded PostgreSQL, pool, middleware) with its Slack adapter; each
delivery is an app mention running a no-op command whose reply goes to a loopback Slack Web API.
The baseline, measured in the same run: a bare slack-bolt AsyncApp whose listener only acks,
served the same way (aiohttp, signature verification on). Targets: p99 < 100 ms, ratio <= 1.5.

    .venv/bin/python bench/slack_ack.py [--events 500] [--concurrency 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.app import start
from bot.context import HandlerContext
from bot.events import IncomingEvent
from bot.router import Router
from bot.settings import load_settings
from tests.support.slack_stub import SlackStub, app_mention, event_callback, sign

SECRET = "bench-signing-secret"


def register_noop(router: Router) -> None:
    @router.command("noop", "cmd_ping")
    async def noop(event: IncomingEvent, ctx: HandlerContext) -> None:
        await ctx.pool.run("noop", None, event_id=event.event_id)
        await ctx.responder.send("ok")


async def deliver_all(url: str, events: int, concurrency: int) -> list[float]:
    bodies = [json.dumps(event_callback(app_mention("<@UBOT> /noop", channel="C1", user=f"U{i % 50}"))).encode()
              for i in range(events)]
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        async def one(body: bytes) -> None:
            async with gate:
                headers = {"Content-Type": "application/json", **sign(body, SECRET)}
                sent = time.perf_counter()
                async with http.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"status {resp.status}")
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(one(b) for b in bodies))
    return latencies


async def baseline(stub: SlackStub, events: int, concurrency: int) -> list[float]:
    app = AsyncApp(client=AsyncWebClient(token="xoxb-bench", base_url=stub.url), signing_secret=SECRET)

    @app.event("app_mention")
    async def only_ack() -> None:
        return None

    async def handle(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    server = web.Application()
    server.router.add_post("/slack/events", handle)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        await deliver_all(f"http://127.0.0.1:{port}/slack/events", 20, 10)  # warm up
        return await deliver_all(f"http://127.0.0.1:{port}/slack/events", events, concurrency)
    finally:
        await runner.cleanup()


def report(name: str, latencies: list[float]) -> tuple[float, float]:
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000
    print(f"{name:<9} {len(latencies)} acks  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")
    return p50, p99


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    async with SlackStub() as stub:
        base = await baseline(stub, args.events, args.concurrency)
        os.environ.update({"SLACK_BOT_TOKEN": "xoxb-bench", "SLACK_SIGNING_SECRET": SECRET})
        with tempfile.TemporaryDirectory() as data_dir:
            settings = load_settings(data_dir=data_dir, server={"port": 0}, log_level="WARNING",
                                     slack={"api_url": stub.url, "min_post_interval_s": 0.0},
                                     rate_limit={"per_user_per_minute": 100000, "burst": 100000})
            running = await start(settings, register=[register_noop])
            try:
                url = f"{running.url}/slack/events"
                await deliver_all(url, 20, 10)  # warm up
                bot = await deliver_all(url, args.events, args.concurrency)
                await running.services.tasks.drain(60)
            finally:
                await running.stop()
    print(f"{args.events} signed event deliveries, {args.concurrency} at a time")
    bot_p50, bot_p99 = report("bot", bot)
    base_p50, base_p99 = report("baseline", base)
    print(f"ratio bot/baseline: p50 {bot_p50 / base_p50:.2f}x, p99 {bot_p99 / base_p99:.2f}x "
          f"(targets: p99 < 100 ms {'PASS' if bot_p99 < 100 else 'FAIL'}, "
          f"ratio <= 1.5 {'PASS' if bot_p99 / base_p99 <= 1.5 else 'FAIL'})")


if __name__ == "__main__":
    asyncio.run(main())
