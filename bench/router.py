"""Router throughput: events/s and message-to-reply latency through the web adapter.

200 concurrent websocket clients (in a separate process, so the server has its own core) each
send messages to a no-op command whose handler runs a job
on the `noop` engine and replies; dedupe, identity, rate limit and the job table put PostgreSQL
in the path. The baseline, measured in the same run, is a bare aiohttp websocket echo server
driven by the same clients: the ratio is what the bot's pipeline costs on top of the transport.

    .venv/bin/python bench/router.py [--clients 200] [--messages 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.app import start
from bot.context import HandlerContext
from bot.events import IncomingEvent
from bot.router import Option, OptionType, Router
from bot.settings import load_settings


def register_noop(router: Router) -> None:
    @router.command("noop", "cmd_ping", options=[Option("text", OptionType.TEXT, "cmd_ping")])
    async def noop(event: IncomingEvent, ctx: HandlerContext) -> None:
        await ctx.pool.run("noop", event.text, event_id=event.event_id)
        await ctx.responder.send("ok")


async def round_trip(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Send one `/noop` and wait for its "ok"."""
    await ws.send_json({"type": "message", "id": uuid.uuid4().hex, "text": "/noop x"})
    while True:
        frame = await ws.receive_json()
        if frame.get("type") == "error":
            raise RuntimeError(frame["text"])
        if frame.get("text") == "ok":
            return


async def client(url: str, messages: int, latencies: list[float], hello: bool) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        if hello:
            await ws.send_json({"type": "hello", "visitor": uuid.uuid4().hex, "locale": "en"})
            await ws.receive_json()  # welcome
            await round_trip(ws)  # first contact greets: prime it so timing measures steady state
        for _ in range(messages):
            sent = time.perf_counter()
            await round_trip(ws)
            latencies.append(time.perf_counter() - sent)


async def _drive_here(url: str, clients: int, messages: int, hello: bool) -> tuple[float, list[float]]:
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(client(url, messages, latencies, hello) for _ in range(clients)))
    return time.perf_counter() - started, latencies


def _drive_process(url: str, clients: int, messages: int, hello: bool) -> tuple[float, list[float]]:
    return asyncio.run(_drive_here(url, clients, messages, hello))


async def drive(url: str, clients: int, messages: int, hello: bool) -> tuple[float, list[float]]:
    """Run the clients in another process while this one serves."""
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as executor:
        return await loop.run_in_executor(executor, _drive_process, url, clients, messages, hello)


async def echo_baseline(clients: int, messages: int) -> tuple[float, list[float]]:
    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            json.loads(msg.data)
            await ws.send_json({"type": "message", "text": "ok"})
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        return await drive(f"http://127.0.0.1:{port}/ws", clients, messages, hello=False)
    finally:
        await runner.cleanup()


def summary(name: str, elapsed: float, latencies: list[float]) -> dict[str, float]:
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    rate = len(latencies) / elapsed
    print(f"{name:<10} {len(latencies):>6} events  {rate:>8.0f} events/s  p50 {p50:>7.1f} ms  p99 {p99:>7.1f} ms")
    return {"rate": rate, "p50": p50, "p99": p99}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--messages", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        settings = load_settings(data_dir=data_dir, server={"port": 0},
                                 rate_limit={"per_user_per_minute": 100000, "burst": 100000},
                                 log_level="WARNING")
        running = await start(settings, register=[register_noop])
        try:
            bot_elapsed, bot_lat = await drive(f"{running.url}/ws", args.clients, args.messages, hello=True)
        finally:
            await running.stop()
    base_elapsed, base_lat = await echo_baseline(args.clients, args.messages)
    print(f"{args.clients} concurrent websocket clients x {args.messages} messages")
    bot = summary("bot", bot_elapsed, bot_lat)
    base = summary("baseline", base_elapsed, base_lat)
    print(f"ratio bot/baseline: throughput {bot['rate'] / base['rate']:.2f}x, "
          f"p50 latency {bot['p50'] / base['p50']:.1f}x, p99 latency {bot['p99'] / base['p99']:.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
