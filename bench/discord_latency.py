"""Discord interaction-to-defer latency: 100 concurrent slash-command interactions through the
whole service (discord.py client, router, pool, PostgreSQL) against a loopback Discord stand-in.

Discord requires the first answer within 3 seconds. The baseline, measured in the same run, is a
bare discord.py client whose command only defers.

    .venv/bin/python bench/discord_latency.py [--interactions 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

import discord
from discord import app_commands

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.app import start
from bot.settings import load_settings
from tests.support.discord_stub import DiscordStub, patch_discord, running_client

TOKEN = "bench-token"


async def fire(stub: DiscordStub, name: str, count: int) -> list[float]:
    records = await asyncio.gather(*(stub.slash_command(name, user=("alice", "bob")[i % 2]) for i in range(count)))
    deadline = asyncio.get_running_loop().time() + 30
    while any(r.callback_latency_s is None for r in records):
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("interactions were not deferred")
        await asyncio.sleep(0.01)
    return [r.callback_latency_s for r in records if r.callback_latency_s is not None]


async def baseline(stub: DiscordStub, count: int) -> list[float]:
    client = discord.Client(intents=discord.Intents.default(), guild_ready_timeout=0.05)
    tree = app_commands.CommandTree(client)

    @tree.command(name="ping", description="defer only")
    async def ping(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)

    async with running_client(stub, client, TOKEN):
        await tree.sync()
        await fire(stub, "ping", 10)  # warm up
        return await fire(stub, "ping", count)


def report(name: str, latencies: list[float]) -> float:
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000
    print(f"{name:<9} {len(latencies)} interactions  defer p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")
    return p99


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interactions", type=int, default=100)
    args = parser.parse_args()
    async with DiscordStub(token=TOKEN, heartbeat_interval_ms=5000) as stub:
        base = await baseline(stub, args.interactions)
        os.environ["DISCORD_BOT_TOKEN"] = TOKEN
        with tempfile.TemporaryDirectory() as data_dir, patch_discord(stub):
            settings = load_settings(data_dir=data_dir, server={"port": 0}, log_level="WARNING",
                                     discord={"guild_ready_timeout_s": 0.05},
                                     rate_limit={"per_user_per_minute": 100000, "burst": 100000})
            running = await start(settings)
            try:
                await fire(stub, "ping", 10)  # warm up
                bot = await fire(stub, "ping", args.interactions)
                await running.services.tasks.drain(60)
            finally:
                await running.stop()
    print(f"{args.interactions} concurrent slash-command interactions")
    bot_p99 = report("bot", bot)
    base_p99 = report("baseline", base)
    print(f"ratio bot/baseline p99: {bot_p99 / base_p99:.2f}x; Discord's limit is 3000 ms "
          f"({'PASS' if bot_p99 < 3000 else 'FAIL'})")


if __name__ == "__main__":
    asyncio.run(main())
