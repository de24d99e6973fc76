"""engines.moderation on a held-out set: per-category precision and recall, and the benign false-positive rate.

`tests/data/moderation/heldout.jsonl` was written without looking at the engine's term lists or the other
moderation data, so these figures say how the local engine does on text it was not tuned on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engines.base import EngineRequest
from engines.moderation import CATEGORIES, LocalModerationEngine, ModerationRequest

HELDOUT = Path(__file__).resolve().parents[1] / "data" / "moderation" / "heldout.jsonl"

# Floors set from the first measurement on this held-out set, which the engine was not tuned on:
# precision and recall rounded DOWN to the nearest 0.05, the benign false-positive rate rounded UP
# to the next 0.05. Raise them when the engine improves; do not edit the data to meet them.
MAX_BENIGN_FP_RATE = 0.05  # measured 1/75 = 0.013
MIN_RECALL: dict[str, float] = {
    "harassment": 0.60,  # measured 9/15 = 0.600
    "hate": 0.65,  # 9/13 = 0.692
    "sexual": 0.70,  # 8/11 = 0.727
    "violence": 0.35,  # 5/14 = 0.357
    "self_harm": 0.60,  # 8/13 = 0.615
    "illicit": 0.40,  # 5/12 = 0.417
}
MIN_PRECISION: dict[str, float] = {
    "harassment": 0.75,  # measured 9/12 = 0.750
    "hate": 1.00,  # 9/9
    "sexual": 1.00,  # 8/8
    "violence": 0.80,  # 5/6 = 0.833
    "self_harm": 0.85,  # 8/9 = 0.889
    "illicit": 0.80,  # 5/6 = 0.833
}


def load_rows() -> list[dict[str, Any]]:
    with HELDOUT.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def engine() -> Iterator[LocalModerationEngine]:
    e = LocalModerationEngine()
    e.load()
    yield e
    e.unload()


def test_heldout_set_is_well_formed() -> None:
    rows = load_rows()
    texts = [row["text"] for row in rows]
    assert len(texts) == len(set(texts)), "duplicate texts"
    for row in rows:
        assert row["lang"] in {"en", "zh", "mixed"}
        assert row["kind"] in {"benign", "toxic"}
        assert set(row["labels"]) <= set(CATEGORIES)
        assert bool(row["labels"]) == (row["kind"] == "toxic")
    assert set(MIN_RECALL) == set(MIN_PRECISION) == set(CATEGORIES)


def test_heldout_precision_recall(engine: LocalModerationEngine) -> None:
    rows = load_rows()
    results = engine.run([EngineRequest(ModerationRequest(row["text"])) for row in rows])
    assert len(results) == len(rows)
    for result in results:
        assert not isinstance(result, Exception), result

    stats: dict[str, dict[str, float]] = {}
    for category in CATEGORIES:
        tp = fp = fn = 0
        for row, result in zip(rows, results, strict=True):
            truth = category in row["labels"]
            predicted = category in result.flagged
            tp += truth and predicted
            fp += predicted and not truth
            fn += truth and not predicted
        # No predictions at all counts as precision 0 (nothing was found), not as vacuously perfect.
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        stats[category] = {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall}

    benign = [(row, result) for row, result in zip(rows, results, strict=True) if row["kind"] == "benign"]
    benign_flagged = [(row, result) for row, result in benign if result.flagged]
    benign_fp_rate = len(benign_flagged) / len(benign)

    print()
    print(f"{'category':<12} {'tp':>4} {'fp':>4} {'fn':>4} {'precision':>10} {'recall':>8}")
    for category, s in stats.items():
        print(f"{category:<12} {s['tp']:>4} {s['fp']:>4} {s['fn']:>4} {s['precision']:>10.3f} {s['recall']:>8.3f}")
    print(f"benign false-positive rate: {len(benign_flagged)}/{len(benign)} = {benign_fp_rate:.3f}")
    for row, result in benign_flagged:
        print(f"  benign flagged {result.flagged}: {row['text']}")

    eps = 1e-9
    assert benign_fp_rate <= MAX_BENIGN_FP_RATE + eps
    for category, s in stats.items():
        assert s["recall"] >= MIN_RECALL[category] - eps, (category, s)
        assert s["precision"] >= MIN_PRECISION[category] - eps, (category, s)
