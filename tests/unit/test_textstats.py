"""handlers.textstats without a model: clustering on synthetic vectors, the prompt parsers, and the sentiment
classifier's calibration logic on a deterministic hashed bag-of-words "embedding"."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from handlers.textstats import (
    CALIBRATION_PATH,
    DESCRIPTIONS,
    LABELS,
    LANGUAGE_PAIRS,
    SentimentClassifier,
    cluster,
    fallback_prompt,
    fit_scale,
    language_axis,
    load_examples,
    naming_prompt,
    parse_fallback,
    parse_names,
    pick_threshold,
    remove_directions,
    representatives,
    topic_vectors,
)

HELDOUT_PATH = Path(__file__).resolve().parents[1] / "data" / "sentiment_heldout.json"
DIM = 256


def word_vector(word: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(DIM)


def bag_of_words(text: str) -> list[float]:
    """Sum of per-word random vectors (CJK: per character), L2-normalised: texts sharing words are similar."""
    vector = np.zeros(DIM)
    for token in re.findall(r"[a-z]+|[\u4e00-\u9fff]", text.lower()):
        vector += word_vector(token)
    norm = np.linalg.norm(vector)
    return (vector / norm if norm else word_vector("<empty>") / np.linalg.norm(word_vector("<empty>"))).tolist()


class FakeEmbed:
    """The `embed` callable: records its calls; "query" and "passage" give the same vectors."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []

    async def __call__(self, texts: list[str], kind: str) -> list[list[float]]:
        assert kind in ("query", "passage")
        self.calls.append((len(texts), kind))
        await asyncio.sleep(0)
        return [bag_of_words(t) for t in texts]


POSITIVE_WORDS = ["great", "thanks", "happy", "awesome", "love", "nice", "glad", "excellent"]
NEGATIVE_WORDS = ["broken", "angry", "sad", "awful", "hate", "terrible", "annoyed", "failed"]
NEUTRAL_WORDS = ["meeting", "tomorrow", "link", "schedule", "room", "notes", "friday", "update"]
FILLER = ["the", "team", "release", "today", "this", "is", "we", "our", "project", "build"]


def synthetic_examples(count: int, seed: int, noise: float = 0.0) -> list[tuple[str, str]]:
    """`count` examples per label: two label words and two filler words; a `noise` share gets a random label."""
    rng = np.random.default_rng(seed)
    examples = []
    for label, words in zip(LABELS, (POSITIVE_WORDS, NEGATIVE_WORDS, NEUTRAL_WORDS), strict=True):
        for _ in range(count):
            text = " ".join([*rng.choice(words, 2, replace=False), *rng.choice(FILLER, 2, replace=False)])
            shown = label if rng.random() >= noise else str(rng.choice(LABELS))
            examples.append((text, shown))
    return examples


SYNTHETIC_DESCRIPTIONS = {
    "positive": ["great happy thanks", "awesome love nice"],
    "negative": ["broken angry sad", "awful hate terrible"],
    "neutral": ["meeting tomorrow link", "schedule room notes"],
}


# -- clustering ----------------------------------------------------------------------------------------------------


def blobs(per_blob: int = 15, dim: int = 384, spread: float = 0.02,
          seed: int = 1) -> tuple[list[list[float]], list[int]]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((3, dim))
    truth = [i % 3 for i in range(3 * per_blob)]
    rng.shuffle(truth)
    points = np.array([centres[t] / np.linalg.norm(centres[t]) + rng.normal(0, spread, dim) for t in truth])
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.tolist(), truth


def agreement(labels: list[int], truth: list[int]) -> float:
    k = max(max(labels), max(truth)) + 1
    return max(
        sum(perm[a] == b for a, b in zip(labels, truth, strict=True)) for perm in itertools.permutations(range(k))
    ) / len(truth)


def test_cluster_three_blobs_given_n() -> None:
    vectors, truth = blobs()
    labels = cluster(vectors, n=3)
    assert agreement(labels, truth) == 1.0
    assert labels[0] == 0 and sorted(set(labels)) == [0, 1, 2]  # numbered by first appearance


def test_cluster_auto_n_finds_three() -> None:
    vectors, truth = blobs(per_blob=12, seed=7)
    labels = cluster(vectors)
    assert len(set(labels)) == 3
    assert agreement(labels, truth) == 1.0


def test_cluster_auto_n_respects_max_n_and_is_deterministic() -> None:
    vectors, _ = blobs(per_blob=10, seed=3)
    assert len(set(cluster(vectors, max_n=2))) == 2
    assert cluster(vectors, seed=5) == cluster(vectors, seed=5)
    assert cluster(vectors, max_n=1) == [0] * len(vectors)


def test_cluster_edge_cases() -> None:
    assert cluster([]) == []
    assert cluster([[0.3, 0.4]]) == [0]
    assert cluster([[1.0, 0.0], [1.0, 0.0]]) == [0, 0]
    assert cluster([[1.0, 0.0]] * 5, n=3) == [0] * 5
    assert cluster([[1.0, 0.0], [0.0, 1.0]]) == [0, 1]
    assert cluster([[1.0, 0.0], [0.0, 1.0]], n=5) == [0, 1]
    assert cluster([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], n=1) == [0, 0, 0]
    assert cluster([[], []]) == [0, 0]
    # Duplicates: 2 distinct points, n clamped to 2; scaled copies are the same direction.
    dupes = [[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.0]]
    assert cluster(dupes, n=4) == [0, 0, 1, 1, 0]
    assert cluster(dupes) == [0, 0, 1, 1, 0]
    # A zero vector does not crash anything.
    assert len(cluster([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.1]], n=2)) == 4


def test_representatives_closest_first_distinct_and_capped() -> None:
    vectors = [[1.0, 0.0], [0.9, 0.1], [0.6, 0.4], [0.0, 1.0], [0.1, 0.9], [1.0, 0.0]]
    labels = [0, 0, 0, 1, 1, 0]
    texts = ["a", "b", "c", "x", "y", "a"]
    reps = representatives(vectors, labels, texts, k=2)
    assert reps == {0: ["b", "a"], 1: ["x", "y"]} or reps == {0: ["b", "a"], 1: ["y", "x"]}
    assert representatives(vectors, labels, texts, k=10)[0] == ["b", "a", "c"]  # the duplicate "a" once
    assert representatives([], [], []) == {}
    with pytest.raises(ValueError):
        representatives(vectors, labels[:-1], texts)


def test_representatives_on_blobs_come_from_their_own_cluster() -> None:
    vectors, truth = blobs()
    labels = cluster(vectors, n=3)
    texts = [f"blob{t}-{i}" for i, t in enumerate(truth)]
    reps = representatives(vectors, labels, texts, k=5)
    assert sorted(reps) == [0, 1, 2]
    for samples in reps.values():
        assert len(samples) == 5
        assert len({s.split("-")[0] for s in samples}) == 1


async def test_remove_directions_and_language_axis() -> None:
    vectors = [[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]
    out = remove_directions(vectors, [[0.0, 2.0, 0.0]])
    for v in out:
        assert abs(v[1]) < 1e-12
        assert math.isclose(math.hypot(*v), 1.0)
    np.testing.assert_allclose(remove_directions(vectors, []), [[2 ** -0.5, 2 ** -0.5, 0], [0, 2 ** -0.5, 2 ** -0.5]])
    assert remove_directions([], [[1.0, 0.0, 0.0]]) == []

    embed = FakeEmbed()
    axis = await language_axis(embed)
    assert len(axis) == DIM and math.isclose(float(np.linalg.norm(axis)), 1.0)
    assert embed.calls == [(2 * len(LANGUAGE_PAIRS), "query")]


async def test_topic_vectors_one_call_axis_removed() -> None:
    embed = FakeEmbed()
    texts = ["deploy failed again", "lunch at noon", "部署失败了"]
    vectors = await topic_vectors(texts, embed)
    assert embed.calls == [(len(texts) + 2 * len(LANGUAGE_PAIRS), "query")]
    axis = await language_axis(embed)
    assert len(vectors) == 3
    for v in vectors:
        assert abs(float(np.dot(v, axis))) < 1e-9
        assert math.isclose(float(np.linalg.norm(v)), 1.0)
    assert await topic_vectors([], embed) == []


# -- naming ---------------------------------------------------------------------------------------------------------


def test_naming_prompt_languages() -> None:
    samples = {1: ["lunch?", "pizza  at\n noon"], 0: ["CI is red"]}
    en = naming_prompt(samples, "en")
    assert [m["role"] for m in en] == ["system", "user"]
    assert "English" in en[0]["content"] and "JSON" in en[0]["content"]
    user = en[1]["content"]
    assert user.index("Group 0:") < user.index("Group 1:")
    assert "- pizza at noon" in user and '"0", "1"' in user
    zh = naming_prompt(samples, "zh-CN")
    assert "中文" in zh[0]["content"] and "第 0 组:" in zh[1]["content"]
    long = naming_prompt({0: ["x" * 500]}, "en")[1]["content"]
    assert "x" * 200 in long and "x" * 201 not in long


@pytest.mark.parametrize(("answer", "expected"), [
    ('{"0": "Deploy failures", "1": "Lunch plans", "2": "Hiring"}', {0: "Deploy failures", 1: "Lunch plans",
                                                                      2: "Hiring"}),
    ('```json\n{"0": "CI problems", "2": "Interviews"}\n```', {0: "CI problems", 1: "Topic 2", 2: "Interviews"}),
    ('Sure! Here are the names:\n{"cluster 0": "Build breaks", "Group 1": " Food "}\nHope this helps.',
     {0: "Build breaks", 1: "Food", 2: "Topic 3"}),
    ('{0: broken json} then {"1": "Lunch"}', {0: "Topic 1", 1: "Lunch", 2: "Topic 3"}),
    ('[{"id": 0, "name": "Deploys"}, {"id": 2, "name": "Hiring"}]', {0: "Deploys", 1: "Topic 2", 2: "Hiring"}),
    ('{"0": {"name": "Deploys"}, "1": 42, "2": ""}', {0: "Deploys", 1: "42", 2: "Topic 3"}),
    ("0: Deploy failures\n1 - Lunch plans\n**2**: Hiring", {0: "Deploy failures", 1: "Lunch plans", 2: "Hiring"}),
    ("I cannot help with that.", {0: "Topic 1", 1: "Topic 2", 2: "Topic 3"}),
    ("", {0: "Topic 1", 1: "Topic 2", 2: "Topic 3"}),
    ('{"0": "' + "very long name " * 10 + '"}', {0: ("very long name " * 10)[:60].strip(), 1: "Topic 2",
                                               2: "Topic 3"}),
])
def test_parse_names(answer: str, expected: dict[int, str]) -> None:
    assert parse_names(answer, [0, 1, 2]) == expected


def test_parse_names_chinese_and_id_filter() -> None:
    answer = '好的：\n```\n{"0": "部署失败", "1": "午饭安排", "7": "无关"}\n```'
    assert parse_names(answer, [0, 1, 2], locale="zh") == {0: "部署失败", 1: "午饭安排", 2: "话题 3"}
    assert parse_names("第1组：招聘面试", [1], locale="zh") == {1: "招聘面试"}
    assert parse_names("", {5}, locale="zh_TW") == {5: "话题 6"}


# -- sentiment fallback ---------------------------------------------------------------------------------------------


def test_fallback_prompt() -> None:
    messages = fallback_prompt("The build is broken again")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert all(word in messages[0]["content"] for word in LABELS)
    assert "exactly one" in messages[0]["content"]
    assert "The build is broken again" in messages[1]["content"]


@pytest.mark.parametrize(("answer", "expected"), [
    ("positive", "positive"),
    ("Positive.", "positive"),
    ("  NEGATIVE\n", "negative"),
    ("**Neutral**", "neutral"),
    ("neutral sentiment", "neutral"),
    ("Sentiment: negative", "negative"),
    ("The sentiment is positively upbeat.", "positive"),
    ("负面", "negative"),
    ("情感：正面。", "positive"),
    ("中性", "neutral"),
    ("消极", "negative"),
    ("积极的", "positive"),
    ('{"sentiment": "Negative"}', "negative"),
    ('```json\n{"label": "neutral"}\n```', "neutral"),
    ('{"positive": 0.1, "negative": 0.7, "neutral": 0.2}', "negative"),
    ("not positive, rather negative", "negative"),
    ("It's non-negative: neutral.", "neutral"),
    ("不是正面，是负面", "negative"),
    ("I don't know", None),
    ("", None),
    ("mixed", None),
])
def test_parse_fallback(answer: str, expected: str | None) -> None:
    assert parse_fallback(answer) == expected


# -- sentiment classifier -------------------------------------------------------------------------------------------


def test_shipped_calibration_and_heldout_sets() -> None:
    calibration = load_examples(CALIBRATION_PATH)
    heldout = load_examples(HELDOUT_PATH)
    assert len(calibration) == 60 and len(heldout) == 30
    for examples, per_label in ((calibration, 20), (heldout, 10)):
        for label in LABELS:
            texts = [t for t, lab in examples if lab == label]
            assert len(texts) == per_label
            chinese = sum(bool(re.search(r"[\u4e00-\u9fff]", t)) for t in texts)
            assert chinese == per_label // 2
    assert not {t for t, _ in calibration} & {t for t, _ in heldout}
    assert all(len(DESCRIPTIONS[label]) >= 4 for label in LABELS)


def test_load_examples_rejects_unknown_labels(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"text": "hi", "label": "happy"}]), encoding="utf-8")
    with pytest.raises(ValueError, match="happy"):
        load_examples(path)
    with pytest.raises(ValueError):
        SentimentClassifier(examples=[("hi", "happy")])
    with pytest.raises(ValueError):
        SentimentClassifier(examples=[("hi", "positive")], descriptions={"positive": ["good"]})


def test_pick_threshold() -> None:
    conf = [0.95, 0.9, 0.8, 0.7, 0.6, 0.5]
    ok = [True, True, True, False, True, False]
    assert pick_threshold(conf, ok, 0.9) == 0.8  # at 0.7: 3/4; at 0.6: 4/5
    assert pick_threshold(conf, ok, 0.8) == 0.6
    assert pick_threshold(conf, ok, 0.6) == 0.0  # 4/6 overall: the floor is enough
    assert pick_threshold(conf, ok, 0.6, floor=0.55) == 0.55
    assert pick_threshold(conf, ok, 0.9, floor=0.85) == 0.85  # 2/2 above the floor
    # No errors: the floor, not the lowest confidence seen (which may be 0.99 when all are confident).
    assert pick_threshold([0.999, 0.995], [True, True], 0.9, floor=0.5) == 0.5
    assert pick_threshold([0.9, 0.8], [False, False], 0.5) > 1.0  # nothing qualifies: nothing is confident
    assert pick_threshold([0.9, 0.9, 0.8], [True, False, True], 0.9) > 1.0  # ties admitted together
    assert pick_threshold([], [], 0.9) > 1.0


def test_fit_scale_prefers_sharper_when_right_and_softer_when_wrong() -> None:
    logits = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]] * 5)
    y_right = np.array([0, 1, 2] * 5)
    y_mixed = y_right.copy()
    y_mixed[:4] = [1, 2, 0, 0]
    sharp = fit_scale(logits, y_right)
    # Finite though there is no error: the labels are smoothed by 1/(n+2), so the fitted confidence is about
    # 1 - (1/17) * 2/3, not 1.0.
    confidence = math.exp(sharp) / (math.exp(sharp) + 2)
    assert confidence == pytest.approx(1 - 2 / 3 / 17, abs=0.005)
    assert fit_scale(logits, y_mixed) < sharp


async def test_classifier_calibrates_lazily_once_and_classifies() -> None:
    embed = FakeEmbed()
    clf = SentimentClassifier(synthetic_examples(8, seed=0), SYNTHETIC_DESCRIPTIONS)
    assert not clf.calibrated
    with pytest.raises(RuntimeError):
        _ = clf.threshold
    texts = ["great thanks, awesome release", "the build failed, terrible and broken", "meeting notes link for friday"]
    first, second = await asyncio.gather(clf.classify(texts, embed), clf.classify(texts[0], embed))
    # Calibration: one call for the examples (query), one for the descriptions (passage), once; then one call each.
    assert sorted(embed.calls) == sorted([(24, "query"), (6, "passage"), (3, "query"), (1, "query")])
    assert [r.label for r in first] == ["positive", "negative", "neutral"]
    assert second[0].label == first[0].label and math.isclose(second[0].confidence, first[0].confidence)
    for r in first:
        assert set(r.scores) == set(LABELS)
        assert math.isclose(sum(r.scores.values()), 1.0)
        assert r.confidence == max(r.scores.values()) == r.scores[r.label]
        assert not r.unsure
    assert clf.cv_accuracy > 0.9 and clf.cv_coverage == 1.0
    assert clf.threshold == clf.min_threshold == 0.5  # out-of-fold accuracy >= 0.9 already at the floor
    assert clf.temperature > 0
    await clf.calibrate(embed)  # already done: no more calls
    assert len(embed.calls) == 4
    assert await clf.classify([], embed) == []


async def test_classifier_mixed_message_is_unsure() -> None:
    embed = FakeEmbed()
    clf = SentimentClassifier(synthetic_examples(8, seed=0), SYNTHETIC_DESCRIPTIONS)
    mixed, clear = await clf.classify(["great broken meeting", "great happy awesome"], embed)
    assert mixed.unsure and mixed.confidence < clf.threshold
    assert not clear.unsure and clear.label == "positive"
    # The same classifier with the floor at 0 trusts it: `unsure` is exactly confidence < threshold.
    trusting = SentimentClassifier(synthetic_examples(8, seed=0), SYNTHETIC_DESCRIPTIONS, min_threshold=0.0)
    [again] = await trusting.classify("great broken meeting", embed)
    assert trusting.threshold == 0.0 and not again.unsure


async def test_classifier_noisy_calibration_raises_threshold() -> None:
    embed = FakeEmbed()
    noisy = SentimentClassifier(synthetic_examples(20, seed=1, noise=0.3), SYNTHETIC_DESCRIPTIONS,
                                min_threshold=0.0, target_accuracy=0.95)
    results = await noisy.classify(["great happy", "awful broken", "meeting schedule", "great broken meeting"], embed)
    assert noisy.cv_accuracy < 0.95
    assert noisy.threshold > 0.6  # set by the accuracy target, not by the floor
    assert noisy.cv_coverage < 1.0
    for r in results:
        assert r.unsure == (r.confidence < noisy.threshold)
    # A noisier calibration set makes confidences softer (higher temperature) than a clean one.
    clean = SentimentClassifier(synthetic_examples(20, seed=1), SYNTHETIC_DESCRIPTIONS)
    await clean.calibrate(embed)
    assert noisy.temperature > clean.temperature


async def test_classifier_without_enough_examples_to_cross_validate() -> None:
    embed = FakeEmbed()
    clf = SentimentClassifier([("great thanks", "positive")], SYNTHETIC_DESCRIPTIONS, min_threshold=0.4)
    [result] = await clf.classify("great happy thanks", embed)
    assert math.isnan(clf.cv_accuracy)
    assert clf.threshold == 0.4 and clf.temperature == 1.0
    assert result.label == "positive"
    # Descriptions only.
    zero_shot = SentimentClassifier([], SYNTHETIC_DESCRIPTIONS)
    [result] = await zero_shot.classify("broken angry", embed)
    assert result.label == "negative"


async def test_default_classifier_loads_shipped_calibration() -> None:
    embed = FakeEmbed()
    clf = SentimentClassifier()
    await clf.calibrate(embed)
    assert (60, "query") in embed.calls
    assert (sum(len(v) for v in DESCRIPTIONS.values()), "passage") in embed.calls
    assert clf.calibrated
