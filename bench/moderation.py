"""Moderation: the local engine's latency per message, against its two halves measured alone in the same run.

Every line of tests/data/moderation/labelled.jsonl (English, Chinese and mixed chat messages) goes through
`engines.moderation.LocalModerationEngine.run`, `--rounds` times: once as single-message requests and once in
batches of 16 (what the pool's micro-batching hands the engine under load). Baselines, same texts, same process:
the profanity classifier alone (`profanity_check.predict_prob` on one text) and the term policy alone
(`normalise` plus the term matches, no classifier). Finally one 1 MB message, which is sampled before checking.

    .venv/bin/python bench/moderation.py [--rounds 5] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.base import EngineRequest
from engines.moderation import LocalModerationEngine, ModerationRequest, default_policy, normalise

LABELLED = Path(__file__).resolve().parents[1] / "tests" / "data" / "moderation" / "labelled.jsonl"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(calls: Sequence[Callable[[], object]], rounds: int) -> list[float]:
    """Seconds per call, every call `rounds` times (after one warm-up pass)."""
    for call in calls:
        call()
    out: list[float] = []
    for _ in range(rounds):
        for call in calls:
            started = time.perf_counter()
            call()
            out.append(time.perf_counter() - started)
    return out


def line(name: str, seconds: list[float], per: int = 1) -> str:
    ms = [s * 1000 for s in seconds]
    return (f"{name:<28} {len(ms):5d} calls  p50 {percentile(ms, 0.5):7.2f} ms  p99 {percentile(ms, 0.99):7.2f} ms  "
            f"mean {statistics.fmean(ms):7.2f} ms" + (f"  ({statistics.fmean(ms) / per:5.2f} ms per message)"
                                                       if per > 1 else ""))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()

    texts = [json.loads(row)["text"] for row in LABELLED.read_text(encoding="utf-8").splitlines() if row.strip()]
    engine = LocalModerationEngine()
    started = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - started
    from profanity_check import predict_prob

    policy = default_policy()

    def single(text: str) -> Callable[[], object]:
        return lambda: engine.run([EngineRequest(ModerationRequest(text))])

    def batch(chunk: list[str]) -> Callable[[], object]:
        return lambda: engine.run([EngineRequest(ModerationRequest(t)) for t in chunk])

    def classifier(text: str) -> Callable[[], object]:
        return lambda: predict_prob([text])

    def terms(text: str) -> Callable[[], object]:
        return lambda: policy.hits(normalise(text, policy))

    chunks = [texts[i:i + args.batch] for i in range(0, len(texts), args.batch)]
    engine_single = timed([single(t) for t in texts], args.rounds)
    engine_batch = timed([batch(c) for c in chunks], args.rounds)
    classifier_alone = timed([classifier(t) for t in texts], args.rounds)
    terms_alone = timed([terms(t) for t in texts], args.rounds)

    print(f"{len(texts)} labelled messages x {args.rounds} rounds; engine load {load_s:.2f} s "
          f"({len(policy.terms)} terms, {len(policy.benign)} benign contexts)")
    print(line("engine, one message", engine_single))
    print(line(f"engine, batches of {args.batch}", engine_batch, per=args.batch))
    print(line("baseline: classifier alone", classifier_alone))
    print(line("baseline: terms alone", terms_alone))
    p50, p99 = percentile(engine_single, 0.5), percentile(engine_single, 0.99)
    print(f"ratio engine/classifier alone: p50 {p50 / percentile(classifier_alone, 0.5):.2f}x, "
          f"p99 {p99 / percentile(classifier_alone, 0.99):.2f}x; engine/terms alone: p50 "
          f"{p50 / percentile(terms_alone, 0.5):.2f}x")
    per_message_batched = statistics.fmean(engine_batch) / args.batch
    print(f"batching {args.batch}: {statistics.fmean(engine_single) / per_message_batched:.2f}x the messages/s of one "
          f"by one ({1 / per_message_batched:.0f} vs {1 / statistics.fmean(engine_single):.0f} messages/s)")

    huge = ("The deploy finished and the dashboards look fine. " * 21_000)[:1_000_000] + " you are a worthless idiot"
    started = time.perf_counter()
    [result] = engine.run([EngineRequest(ModerationRequest(huge))])
    print(f"one 1 MB message: {time.perf_counter() - started:.3f} s, flagged {result.flagged}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
