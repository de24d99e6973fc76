"""Throughput of 8 concurrent /imagine requests through the engine pool: batched against one at a time.

Eight `GenerateRequest`s (same model, size, steps; different prompts and seeds) are submitted at once to a
`LocalEnginePool` whose `diffusion` engine batches up to 8 requests (`batch_wait_ms` 200) into one pipeline
call; the baseline, in the same run and process, is the same engine configuration with `max_batch` 1, so
the eight run one after another. Each side is warmed up first (load, one job) and then timed over `--runs`
rounds; figures are images/s and the wall time of a round.

By default the model is a tiny random-weight Stable Diffusion built from configs (the CPU figure here says
what batching saves in per-call overhead, not what a GPU does); `--model` takes any diffusers folder or hub
id with `--device cuda` on a GPU host, where batching fills the GPU:

    .venv/bin/python bench/images.py [--model PATH_OR_HUB_ID] [--device cpu|cuda] [--size 64] [--steps 10]
                                     [--requests 8] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.settings import EngineSettings, PoolSettings
from engines.base import NullRecorder
from engines.image_types import GenerateRequest, GenerateResult
from engines.pool import LocalEnginePool


async def measure(model: str, device: str, max_batch: int, args: argparse.Namespace) -> tuple[list[float], int]:
    """Wall seconds of each timed round of `args.requests` concurrent requests, and the batch size seen."""
    engine = EngineSettings(impl="engines.diffusion:DiffusionEngine", max_batch=max_batch, batch_wait_ms=200,
                            queue_size=64, timeout_s=3600,
                            options={"models": {"bench": model}, "device": device, "safety_checker": False})
    pool = LocalEnginePool({"diffusion": engine}, PoolSettings(), NullRecorder())

    def request(i: int) -> GenerateRequest:
        return GenerateRequest(prompt=f"a lighthouse on a cliff at dusk, painting number {i}", width=args.size,
                               height=args.size, steps=args.steps, seed=i)

    async with pool:
        await pool.run("diffusion", request(0))  # load and warm up
        rounds: list[float] = []
        seen = 0
        for _ in range(args.runs):
            start = time.perf_counter()
            results: list[GenerateResult] = await asyncio.gather(
                *(pool.run("diffusion", request(i)) for i in range(args.requests)))
            rounds.append(time.perf_counter() - start)
            seen = max(seen, *(r.batch_size for r in results))
    return rounds, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="diffusers folder or hub id (default: a tiny random-weight model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from tests.support.tiny_models import tiny_sd

            model = str(tiny_sd(Path(tmp) / "tiny-sd", safety=False))
        label = model if args.model else "tiny random-weight SD (CPU)"
        print(f"model {label}, device {args.device}, {args.size}x{args.size}, {args.steps} steps, "
              f"{args.requests} concurrent requests, {args.runs} runs")
        batched, batched_size = asyncio.run(measure(model, args.device, args.requests, args))
        serial, serial_size = asyncio.run(measure(model, args.device, 1, args))
    for name, rounds, size in (("batched", batched, batched_size), ("one at a time", serial, serial_size)):
        best, median = min(rounds), statistics.median(rounds)
        print(f"{name:14s} batch {size}  round best {best:7.3f} s  median {median:7.3f} s  "
              f"{args.requests / median:7.2f} images/s")
    print(f"ratio batched/one-at-a-time throughput: {statistics.median(serial) / statistics.median(batched):.2f}x")


if __name__ == "__main__":
    main()
