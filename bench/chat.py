"""Local chat model: time to first token and decode speed over a growing conversation.

Serves the bundled Qwen2.5-Coder-0.5B-Instruct GGUF (or `--model`) with `engines.llama_local` and
holds a 20-turn conversation through the real `openai` SDK, streaming. The prompt is built
stably (same system prompt, earlier turns unchanged), so llama.cpp reuses the cached prefix and
turn 20's time to first token should stay near turn 1's (target ratio <= 1.5) although its
prompt is many times longer. The baseline, in the same run and on the same server, replays the
same conversation (the same user turns and the first run's answers, so every prompt is
identical) with `cache_prompt: false`, so every turn processes its whole prompt.

    .venv/bin/python bench/chat.py [--turns 20] [--max-tokens 48] [--model PATH] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.llama_local import OPENAI_CLIENT_HEADERS, LlamaServer, bundled_model_path

ROOT = Path(__file__).resolve().parents[1]

SYSTEM = (
    "You are TeamBot, the assistant of a small software team. You answer questions about Python, "
    "asyncio, databases, HTTP services, testing and deployment. Keep every answer short: one or "
    "two sentences, no code blocks unless asked, no lists longer than three items. If a question "
    "is ambiguous, state the most likely reading and answer that. Never invent APIs: if you are "
    "not sure a function exists, say so. Prefer the standard library over third-party packages. "
    "When you mention a command, give it exactly as it should be typed. Be friendly but terse."
)

QUESTIONS = [
    "What does asyncio.gather do?",
    "How is it different from asyncio.wait?",
    "When should I use a TaskGroup instead?",
    "What happens to the other tasks if one task in a TaskGroup fails?",
    "How do I put a timeout on a single await?",
    "What is the difference between a thread and a process in Python?",
    "Why does the GIL matter for CPU-bound code?",
    "How do I run blocking code from a coroutine?",
    "What is a context manager?",
    "How do I write an async context manager?",
    "What does PostgreSQL's ON CONFLICT DO NOTHING do?",
    "Why use a connection pool?",
    "What is a pytest fixture?",
    "What does scope='module' change for a fixture?",
    "How do I mark a test as slow in pytest?",
    "What is the difference between ruff and mypy?",
    "How do I stream a response with the openai SDK?",
    "What is time to first token?",
    "Why does prompt caching make it lower?",
    "Summarise our conversation in one sentence.",
]


@dataclass
class Turn:
    ttft_s: float
    prompt_n: int  # prompt tokens processed for this turn (the rest came from the KV cache)
    cache_n: int  # prompt tokens reused from the KV cache
    decode_n: int
    decode_tps: float
    answer: str


async def turn(client: AsyncOpenAI, messages: list[ChatCompletionMessageParam], max_tokens: int, cache: bool) -> Turn:
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    timings: dict[str, Any] = {}
    stream = await client.chat.completions.create(
        model="local",
        messages=messages,
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        extra_body={"cache_prompt": cache},
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter()
            parts.append(chunk.choices[0].delta.content)
        extra = chunk.model_extra or {}
        if "timings" in extra:
            timings = extra["timings"]
    end = time.perf_counter()
    decode_n = int(timings.get("predicted_n", len(parts)))
    first = first if first is not None else end
    # Client-side decode rate: tokens after the first over the time after the first.
    decode_tps = (decode_n - 1) / (end - first) if decode_n > 1 and end > first else 0.0
    return Turn(
        ttft_s=first - started,
        prompt_n=int(timings.get("prompt_n", -1)),
        cache_n=int(timings.get("cache_n", -1)),
        decode_n=decode_n,
        decode_tps=decode_tps,
        answer="".join(parts),
    )


def show(label: str, index: int, t: Turn) -> None:
    print(
        f"{label:<8} turn {index:2d}  prompt {t.prompt_n + t.cache_n:5d} tok (cached {t.cache_n:5d}, "
        f"new {t.prompt_n:4d})  ttft {t.ttft_s * 1000:8.1f} ms  decode {t.decode_tps:6.1f} tok/s "
        f"({t.decode_n} tok)",
        flush=True,
    )


async def conversation(
    client: AsyncOpenAI, questions: list[str], max_tokens: int, cache: bool, answers: list[str] | None
) -> list[Turn]:
    """One conversation; with `answers`, the history uses them instead of what this run generates."""
    label = "cached" if cache else "baseline"
    messages: list[ChatCompletionMessageParam] = [{"role": "system", "content": SYSTEM}]
    turns = []
    for i, question in enumerate(questions):
        messages.append({"role": "user", "content": question})
        t = await turn(client, messages, max_tokens, cache)
        turns.append(t)
        show(label, i + 1, t)
        messages.append({"role": "assistant", "content": answers[i] if answers else t.answer})
    return turns


def peak_rss_mb(pid: int | None) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return float("nan")


async def bench(base_url: str, turns: int, max_tokens: int, baseline: bool) -> None:
    questions = (QUESTIONS * (turns // len(QUESTIONS) + 1))[:turns]
    async with AsyncOpenAI(
        base_url=base_url, api_key="local", max_retries=0, timeout=300, default_headers=OPENAI_CLIENT_HEADERS
    ) as client:
        # Warm-up on an unrelated prompt: turn 1 then pays the full system prompt, not first-call costs.
        await turn(client, [{"role": "user", "content": "Say OK."}], 4, cache=False)
        cached = await conversation(client, questions, max_tokens, cache=True, answers=None)
        base = (
            await conversation(client, questions, max_tokens, cache=False, answers=[t.answer for t in cached])
            if baseline
            else []
        )

    def summary(label: str, runs: list[Turn]) -> None:
        ratio = runs[-1].ttft_s / runs[0].ttft_s
        tps = sum(t.decode_tps for t in runs) / len(runs)
        print(
            f"{label:<8} ttft turn 1 {runs[0].ttft_s * 1000:.1f} ms, turn {len(runs)} {runs[-1].ttft_s * 1000:.1f} ms, "
            f"ratio turn{len(runs)}/turn1 {ratio:.2f}; mean decode {tps:.1f} tok/s; "
            f"prompt at turn {len(runs)}: {runs[-1].prompt_n + runs[-1].cache_n} tok"
        )

    print()
    summary("cached", cached)
    if base:
        summary("baseline", base)
        ratio = cached[-1].ttft_s / cached[0].ttft_s
        verdict = "PASS" if ratio <= 1.5 else "FAIL"
        print(f"ttft ratio turn{turns}/turn1 with prefix cache: {ratio:.2f} (target <= 1.5: {verdict})")
        print(f"ttft ratio turn{turns}/turn1 baseline (cache_prompt false): {base[-1].ttft_s / base[0].ttft_s:.2f}")
        print(f"turn {turns} ttft, baseline / cached: {base[-1].ttft_s / cached[-1].ttft_s:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--model", type=Path, help="a GGUF file (default: the bundled Qwen2.5-Coder-0.5B)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ctx-size", type=int, default=8192)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()

    started = time.perf_counter()
    model = args.model or bundled_model_path(ROOT / ".data" / "models")
    prepared = time.perf_counter() - started
    with LlamaServer(model, ctx_size=args.ctx_size, threads=args.threads) as server:
        print(f"model {model.name}: ready in {prepared:.2f} s (assembly/verification)")
        started_s = server.start_seconds or 0.0
        print(f"server {server.url}: started in {started_s:.2f} s, {server.threads} threads, ctx {args.ctx_size}")
        asyncio.run(bench(server.base_url, args.turns, args.max_tokens, not args.no_baseline))
        print(f"server peak RSS {peak_rss_mb(server.pid):.0f} MB")


if __name__ == "__main__":
    main()
