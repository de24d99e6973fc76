"""Text analytics over embeddings: calibrated zero-shot sentiment and topic clustering. Platform-free and pure.

Nothing here imports an engine. Every coroutine takes `embed(texts, kind) -> vectors`, an async callable the
caller wires to the embeddings engine; `kind` is "query" or "passage" (the E5 prefixes) and the vectors are
L2-normalised, so a dot product is the cosine similarity.

Sentiment (`SentimentClassifier`)
    A multinomial logistic regression over the raw embeddings, trained on the label descriptions below
    (embedded as "passage") and the shipped calibration messages (`data/sentiment_calibration.json`, embedded as
    "query", like the messages to classify). Chosen over mean prototypes and over a regression on cosine
    features: on the bundled multilingual-e5-small it had the best cross-validated accuracy on the calibration
    set (0.967 vs 0.93 / 0.90) and the best held-out accuracy; "query" messages with "passage" descriptions
    beat "query"/"query" (0.967 vs 0.950) and "passage"/"passage".
    Confidence is calibrated by temperature scaling: a scale on the logits is fitted by minimising the NLL of
    out-of-fold (stratified k-fold) predictions on the calibration set (labels smoothed by 1/(n+2), so a set with
    no errors does not make every confidence 1.0). `threshold` is the lowest confidence t >= `min_threshold`
    (default 0.5: less than even odds is never trusted) at which the out-of-fold predictions with confidence
    >= t are right at least `target_accuracy` (0.9) of the time; it rises above the floor only when the
    calibration set's errors require it. Below it a result is `unsure` and the caller asks the chat engine
    instead: `fallback_prompt` / `parse_fallback`.

Topics (`cluster`, `representatives`, `naming_prompt` / `parse_names`)
    Multilingual E5 puts a strong language component in every vector: English and Chinese messages about the
    same thing are further apart than two unrelated messages in one language, so plain KMeans splits a bilingual
    chat by language. `topic_vectors` embeds the texts and projects out the English-Chinese axis, measured on a
    small fixed set of parallel sentence pairs on unrelated subjects (so it does not depend on which topics
    happen to be discussed in which language). `cluster` then centres and L2-normalises the vectors and runs
    KMeans, choosing the number of clusters by cosine silhouette when it is not given. On a bilingual test chat
    (3 topics x 20 messages) that takes purity from 0.50 (split by language) to 1.00, and on a second, unseen
    set from 0.58 (auto n: 2) to 0.97 (auto n: 3).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engines.embeddings import LANGUAGE_PAIRS

Embed = Callable[[list[str], str], Awaitable[list[list[float]]]]
Array = npt.NDArray[np.float64]

LABELS: tuple[str, ...] = ("positive", "negative", "neutral")
TEXT_KIND = "query"  # messages to classify, and the calibration messages
DESCRIPTION_KIND = "passage"  # the label descriptions
# Below this length the mean English-Chinese difference is noise: the vectors are already language-neutral.
NEUTRAL_AXIS_NORM = 0.02
TOPIC_KIND = "query"  # messages to cluster (E5 recommends "query" for symmetric tasks)

CALIBRATION_PATH = Path(__file__).resolve().parent / "data" / "sentiment_calibration.json"

DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "positive": (
        "This message is happy, satisfied or grateful.",
        "A positive message: praise, thanks, good news or excitement.",
        "The writer is pleased and something went well.",
        "这条消息表达了满意、开心或感谢。",
        "积极的消息：表扬、感谢、好消息或兴奋。",
        "写的人很高兴，事情进展顺利。",
    ),
    "negative": (
        "This message is angry, frustrated, sad or disappointed.",
        "A negative message: complaints, problems, bad news or stress.",
        "The writer is unhappy and something went wrong.",
        "这条消息表达了不满、生气、沮丧或失望。",
        "消极的消息：抱怨、故障、坏消息或压力。",
        "写的人不高兴，事情出了问题。",
    ),
    "neutral": (
        "This message is neutral and factual, with no emotion.",
        "A neutral message: a question, an announcement, a schedule or a plain fact.",
        "The writer just shares information or asks something, without feelings.",
        "这条消息是中性的陈述，不带情绪。",
        "中性的消息：提问、通知、安排或客观事实。",
        "写的人只是告知信息或提问，没有情绪。",
    ),
}

# -- helpers ------------------------------------------------------------------------------------------------------


def _matrix(vectors: Sequence[Sequence[float]] | Array) -> Array:
    matrix = np.asarray(vectors, dtype=np.float64)
    if matrix.size == 0:
        return np.zeros((len(vectors), 0))
    if matrix.ndim != 2:
        raise ValueError("vectors must be a list of equally long lists of numbers")
    return matrix


def _unit_rows(matrix: Array) -> Array:
    """Each row scaled to unit length; zero rows stay zero."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def _softmax(logits: Array) -> Array:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _nll(logits: Array, y: npt.NDArray[np.int64], smoothing: float = 0.0) -> float:
    """Mean cross-entropy of softmax(`logits`) against one-hot `y` smoothed by `smoothing`."""
    log_probs = np.log(_softmax(logits) + 1e-300)
    target = np.full(log_probs.shape, smoothing / log_probs.shape[1])
    target[np.arange(len(y)), y] += 1.0 - smoothing
    return float(-np.mean(np.sum(target * log_probs, axis=1)))


def fit_scale(logits: Array, y: npt.NDArray[np.int64]) -> float:
    """The factor on `logits` (1 / temperature) that minimises the cross-entropy against labels `y`.

    The labels are smoothed by 1 / (n + 2) (Laplace's rule of succession): without that, a calibration set
    with no errors would drive the temperature to zero and every confidence to 1.0.
    """
    smoothing = 1.0 / (len(y) + 2)
    grid = np.exp(np.linspace(-4.0, 6.0, 1001))
    losses = [_nll(logits * s, y, smoothing) for s in grid]
    return float(grid[int(np.argmin(losses))])


def pick_threshold(confidences: Sequence[float] | Array, correct: Sequence[bool] | npt.NDArray[np.bool_],
                   target: float, floor: float = 0.0) -> float:
    """The lowest t >= `floor` such that the predictions with confidence >= t are right at least `target` of
    the time; just above 1.0 (nothing is confident) when no t qualifies."""
    conf = np.asarray(confidences, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    for t in sorted({floor, *(float(c) for c in conf if c >= floor)}):
        chosen = conf >= t
        if chosen.any() and ok[chosen].mean() >= target:
            return t
    return math.nextafter(1.0, 2.0)


# -- sentiment ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SentimentResult:
    """`scores` are calibrated probabilities per label; `unsure` means: ask the chat engine instead."""

    label: str
    confidence: float
    scores: dict[str, float]
    unsure: bool


def load_examples(path: Path = CALIBRATION_PATH) -> list[tuple[str, str]]:
    """(text, label) pairs from a JSON list of {"text": ..., "label": ...}."""
    items = json.loads(path.read_text(encoding="utf-8"))
    examples = [(str(item["text"]), str(item["label"])) for item in items]
    unknown = {label for _, label in examples} - set(LABELS)
    if unknown:
        raise ValueError(f"unknown sentiment labels in {path}: {sorted(unknown)}")
    return examples


@dataclass
class _Fitted:
    weights: Array  # (labels, dim)
    bias: Array  # (labels,)
    scale: float
    threshold: float
    cv_accuracy: float
    cv_coverage: float


class SentimentClassifier:
    """Calibrated zero-shot sentiment (positive / negative / neutral) for short chat messages, in any language
    the embedding model knows (the shipped descriptions and calibration messages are English and Chinese).

    `examples` ((text, label) pairs; default: the shipped calibration set) and `descriptions` (label -> texts)
    are the training data. `target_accuracy` and `min_threshold` set `threshold` (see the module docstring);
    `regularisation` is the logistic regression's C. Calibration runs on the first `classify`, once.
    """

    def __init__(self, examples: Sequence[tuple[str, str]] | None = None,
                 descriptions: Mapping[str, Sequence[str]] | None = None, *, target_accuracy: float = 0.9,
                 min_threshold: float = 0.5, regularisation: float = 10.0, folds: int = 5, seed: int = 0) -> None:
        self.examples = list(examples) if examples is not None else load_examples()
        chosen = DESCRIPTIONS if descriptions is None else descriptions
        self.descriptions = {label: list(texts) for label, texts in chosen.items()}
        if set(self.descriptions) - set(LABELS) or {label for _, label in self.examples} - set(LABELS):
            raise ValueError(f"sentiment labels must be among {LABELS}")
        covered = {label for _, label in self.examples} | {k for k, v in self.descriptions.items() if v}
        if covered != set(LABELS):
            raise ValueError(f"every label needs an example or a description; missing {set(LABELS) - covered}")
        self.target_accuracy = target_accuracy
        self.min_threshold = min_threshold
        self.regularisation = regularisation
        self.folds = folds
        self.seed = seed
        self._fitted: _Fitted | None = None
        self._lock = asyncio.Lock()

    @property
    def calibrated(self) -> bool:
        return self._fitted is not None

    def _state(self) -> _Fitted:
        if self._fitted is None:
            raise RuntimeError("SentimentClassifier is not calibrated yet")
        return self._fitted

    @property
    def threshold(self) -> float:
        return self._state().threshold

    @property
    def temperature(self) -> float:
        return 1.0 / self._state().scale

    @property
    def cv_accuracy(self) -> float:
        """Out-of-fold accuracy on the calibration examples (NaN when there were too few to cross-validate)."""
        return self._state().cv_accuracy

    @property
    def cv_coverage(self) -> float:
        """Share of calibration examples whose out-of-fold prediction reaches `threshold` (NaN as above)."""
        return self._state().cv_coverage

    async def calibrate(self, embed: Embed) -> None:
        """Embeds the descriptions and examples and fits the model, its temperature and `threshold`. Once."""
        async with self._lock:
            if self._fitted is not None:
                return
            description_pairs = [(t, label) for label in LABELS for t in self.descriptions.get(label, [])]
            example_vectors = await embed([t for t, _ in self.examples], TEXT_KIND) if self.examples else []
            description_vectors = (await embed([t for t, _ in description_pairs], DESCRIPTION_KIND)
                                   if description_pairs else [])
            x_examples = _matrix(example_vectors)
            y_examples = np.array([LABELS.index(label) for _, label in self.examples], dtype=np.int64)
            x_descriptions = _matrix(description_vectors)
            y_descriptions = np.array([LABELS.index(label) for _, label in description_pairs], dtype=np.int64)
            self._fitted = await asyncio.to_thread(self._fit, x_examples, y_examples, x_descriptions, y_descriptions)

    def _train(self, x: Array, y: npt.NDArray[np.int64], x_extra: Array,
               y_extra: npt.NDArray[np.int64]) -> tuple[Array, Array]:
        from sklearn.linear_model import LogisticRegression

        parts = [m for m in (x, x_extra) if len(m)]
        model = LogisticRegression(C=self.regularisation, max_iter=5000)
        model.fit(np.vstack(parts), np.concatenate([y, y_extra]))
        weights = np.zeros((len(LABELS), model.coef_.shape[1]))
        bias = np.full(len(LABELS), -1e3)  # a label absent from the training data is never predicted
        classes = [int(c) for c in model.classes_]
        if len(classes) == 2:  # binary: sklearn keeps one row, for classes[1]
            weights[classes[1]], bias[classes[1]] = model.coef_[0], model.intercept_[0]
            weights[classes[0]], bias[classes[0]] = 0.0, 0.0
        else:
            for row, label in enumerate(classes):
                weights[label], bias[label] = model.coef_[row], model.intercept_[row]
        return weights, bias

    def _fit(self, x: Array, y: npt.NDArray[np.int64], x_desc: Array, y_desc: npt.NDArray[np.int64]) -> _Fitted:
        from sklearn.model_selection import StratifiedKFold

        counts = [int(np.sum(y == i)) for i in range(len(LABELS)) if np.any(y == i)]
        folds = min(self.folds, min(counts)) if counts else 0
        scale, threshold = 1.0, self.min_threshold
        cv_accuracy = cv_coverage = math.nan
        if folds >= 2 and len(set(y.tolist())) >= 2:
            out_of_fold = np.zeros((len(y), len(LABELS)))
            splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.seed)
            for train, test in splitter.split(x, y):
                weights, bias = self._train(x[train], y[train], x_desc, y_desc)
                out_of_fold[test] = x[test] @ weights.T + bias
            scale = fit_scale(out_of_fold, y)
            probs = _softmax(out_of_fold * scale)
            confidence = probs.max(axis=1)
            correct = probs.argmax(axis=1) == y
            threshold = pick_threshold(confidence, correct, self.target_accuracy, self.min_threshold)
            cv_accuracy = float(correct.mean())
            cv_coverage = float(np.mean(confidence >= threshold))
        weights, bias = self._train(x, y, x_desc, y_desc)
        return _Fitted(weights, bias, scale, threshold, cv_accuracy, cv_coverage)

    async def classify(self, text_or_texts: str | Sequence[str], embed: Embed) -> list[SentimentResult]:
        """One result per text (a single string is one text), calibrating first if needed."""
        texts = [text_or_texts] if isinstance(text_or_texts, str) else list(text_or_texts)
        if self._fitted is None:
            await self.calibrate(embed)
        if not texts:
            return []
        state = self._state()
        x = _matrix(await embed(texts, TEXT_KIND))
        probs = _softmax((x @ state.weights.T + state.bias) * state.scale)
        results = []
        for row in probs:
            best = int(np.argmax(row))
            confidence = float(row[best])
            results.append(SentimentResult(
                label=LABELS[best], confidence=confidence,
                scores={label: float(p) for label, p in zip(LABELS, row, strict=True)},
                unsure=confidence < state.threshold,
            ))
        return results


FALLBACK_SYSTEM = (
    "You classify the sentiment of one message from a team chat. The message may be in any language. "
    "Answer with exactly one lowercase English word: positive, negative or neutral. "
    "No punctuation, no explanation."
)

_FALLBACK_WORDS: dict[str, str] = {
    "positive": "positive", "negative": "negative", "neutral": "neutral",
    "正面": "positive", "积极": "positive", "正向": "positive", "褒义": "positive",
    "负面": "negative", "消极": "negative", "负向": "negative", "贬义": "negative",
    "中性": "neutral", "中立": "neutral",
}
_FALLBACK_RE = re.compile(r"(?<![a-z])(positive|negative|neutral)|正面|积极|正向|褒义|负面|消极|负向|贬义|中性|中立")
_NEGATED_RE = re.compile(r"(?:\bnot|\bno|n't|\bnon)[\s-]*$|(?:不是|不|非|并非)\s*$")


def fallback_prompt(text: str) -> list[dict[str, Any]]:
    """Chat messages asking an LLM for the sentiment of `text`, answered in one word (see `parse_fallback`)."""
    return [
        {"role": "system", "content": FALLBACK_SYSTEM},
        {"role": "user", "content": f'Message:\n"""\n{text}\n"""\nSentiment (positive, negative or neutral):'},
    ]


def parse_fallback(answer: str) -> str | None:
    """The label in an LLM's answer to `fallback_prompt`: "Positive.", "**negative**", "neutral sentiment",
    "负面", {"sentiment": "neutral"}, {"positive": 0.1, "negative": 0.8, ...}. None when there is none (or
    only negated ones, "not positive")."""
    text = (answer or "").strip()
    if not text:
        return None
    scored = _label_scores(text)
    if scored is not None:
        return scored
    lowered = text.lower()
    for match in _FALLBACK_RE.finditer(lowered):
        if _NEGATED_RE.search(lowered[max(0, match.start() - 8):match.start()]):
            continue
        return _FALLBACK_WORDS[match.group(0)]
    return None


def _label_scores(text: str) -> str | None:
    """The best label of a JSON object of label -> score, if `text` holds one."""
    for value in _json_objects(text):
        scores = {str(k).strip().lower(): v for k, v in value.items()}
        if set(LABELS) <= set(scores) and all(isinstance(scores[k], int | float) for k in LABELS):
            return max(LABELS, key=lambda k: float(scores[k]))
    return None


def _json_objects(text: str) -> list[dict[Any, Any]]:
    """Every JSON object that can be decoded starting at some "{" in `text`, in order."""
    decoder = json.JSONDecoder()
    found: list[dict[Any, Any]] = []
    for start in (m.start() for m in re.finditer(r"\{", text)):
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(value, dict):
            found.append(value)
    return found


# -- topics -------------------------------------------------------------------------------------------------------


def remove_directions(vectors: Sequence[Sequence[float]] | Array,
                      directions: Sequence[Sequence[float]] | Array) -> list[list[float]]:
    """`vectors` with their components along `directions` projected out, L2-normalised again."""
    matrix = _matrix(vectors)
    if not len(matrix):
        return []
    basis = _matrix(directions)
    if len(basis):
        _, singular, vt = np.linalg.svd(basis, full_matrices=False)
        basis = vt[singular > 1e-9 * max(1.0, float(singular.max()))]
        matrix = matrix - (matrix @ basis.T) @ basis
    return _unit_rows(matrix).tolist()


async def language_axis(embed: Embed, kind: str = TOPIC_KIND) -> list[float]:
    """The unit English -> Chinese direction of the embedding model, from `LANGUAGE_PAIRS`."""
    vectors = _matrix(await embed([t for pair in LANGUAGE_PAIRS for t in pair], kind))
    difference = (vectors[1::2] - vectors[0::2]).mean(axis=0)
    return (difference / np.linalg.norm(difference)).tolist()


async def topic_vectors(texts: Sequence[str], embed: Embed, kind: str = TOPIC_KIND) -> list[list[float]]:
    """Embeddings of `texts` for `cluster`/`representatives`: language axis removed (one `embed` call)."""
    if not texts:
        return []
    pairs = [t for pair in LANGUAGE_PAIRS for t in pair]
    vectors = _matrix(await embed([*texts, *pairs], kind))
    reference = vectors[len(texts):]
    axis = (reference[1::2] - reference[0::2]).mean(axis=0)
    if np.linalg.norm(axis) < NEUTRAL_AXIS_NORM:  # the engine already removed it (E5Engine language_neutral)
        return _unit_rows(vectors[:len(texts)]).tolist()
    return remove_directions(vectors[:len(texts)], axis[np.newaxis, :])


def _relabel(labels: Sequence[int]) -> list[int]:
    """Cluster ids renumbered by first appearance, so the result does not depend on KMeans' numbering."""
    mapping: dict[int, int] = {}
    return [mapping.setdefault(int(label), len(mapping)) for label in labels]


def cluster(vectors: list[list[float]], n: int | None = None, max_n: int = 8, seed: int = 0) -> list[int]:
    """A cluster id per vector (0, 1, ... in order of first appearance).

    KMeans (n_init=10, random_state=seed) on the vectors L2-normalised, centred and normalised again. `n`
    clusters, clamped to the number of distinct vectors; when `n` is None, the n in 2..max_n with the best
    cosine silhouette. Fewer than two distinct vectors: all in cluster 0.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    matrix = _matrix(vectors)
    count = len(matrix)
    if count < 2 or matrix.shape[1] == 0:
        return [0] * count
    matrix = _unit_rows(matrix)
    distinct = len(np.unique(np.round(matrix, 6), axis=0))
    if distinct < 2:
        return [0] * count
    matrix = _unit_rows(matrix - matrix.mean(axis=0))

    def kmeans(k: int) -> list[int]:
        return [int(v) for v in KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(matrix)]

    if n is not None:
        k = min(max(n, 1), distinct)
        return _relabel(kmeans(k)) if k > 1 else [0] * count
    if max_n < 2:
        return [0] * count
    upper = min(max_n, distinct, count - 1)  # silhouette needs 2 <= clusters <= samples - 1
    if upper < 2:
        return _relabel(kmeans(2))
    best_labels, best_score = [0] * count, -math.inf
    for k in range(2, upper + 1):
        labels = kmeans(k)
        if len(set(labels)) < 2:
            continue
        score = float(silhouette_score(matrix, labels, metric="cosine"))
        if score > best_score + 1e-9:  # ties go to the smaller n
            best_labels, best_score = labels, score
    return _relabel(best_labels)


def representatives(vectors: list[list[float]], labels: Sequence[int], texts: Sequence[str],
                    k: int = 5) -> dict[int, list[str]]:
    """Per cluster id, up to `k` distinct texts closest (cosine) to the cluster's centroid, closest first."""
    if not (len(vectors) == len(labels) == len(texts)):
        raise ValueError("vectors, labels and texts must have the same length")
    if not len(vectors):
        return {}
    matrix = _unit_rows(_matrix(vectors))
    ids = np.asarray(labels)
    samples: dict[int, list[str]] = {}
    for cid in sorted({int(label) for label in labels}):
        members = np.flatnonzero(ids == cid)
        centroid = matrix[members].mean(axis=0)
        similarity = matrix[members] @ centroid
        chosen: list[str] = []
        for index in members[np.argsort(-similarity, kind="stable")]:
            text = texts[int(index)]
            if text.strip() and text.strip() not in {c.strip() for c in chosen}:
                chosen.append(text)
            if len(chosen) >= k:
                break
        samples[cid] = chosen
    return samples


def _is_zh(locale: str) -> bool:
    return (locale or "").lower().replace("_", "-").startswith("zh")


def default_topic_name(cid: int, locale: str = "en") -> str:
    """The name of cluster `cid` when the chat engine gave none: "Topic 1" for cluster 0 ("话题 1" in Chinese)."""
    return f"话题 {cid + 1}" if _is_zh(locale) else f"Topic {cid + 1}"


NAMING_SYSTEM = {
    "en": (
        "You name the topics of a team chat. Below are groups of chat messages, each group one topic. "
        "Give each group a short topic name of 2 to 5 words, in English. Answer with one JSON object only, "
        'mapping each group number to its name, for example {"0": "Deploy failures", "1": "Lunch plans"}.'
    ),
    "zh": (
        "你负责给团队聊天的话题命名。下面是几组聊天消息，每组是一个话题。"
        "请为每组起一个简短的中文话题名称（2到5个词）。只回答一个JSON对象，把组号映射到名称，"
        '例如 {"0": "部署失败", "1": "午饭安排"}。'
    ),
}


def naming_prompt(samples: dict[int, list[str]], locale: str) -> list[dict[str, Any]]:
    """Chat messages asking for {"<cluster id>": "<2-5 word topic name>"} in the user's language (en or zh);
    `samples` as from `representatives`. Each sample is cut to 200 characters."""
    zh = _is_zh(locale)
    header = "第 {} 组" if zh else "Group {}"
    blocks = []
    for cid in sorted(samples):
        lines = [f"- {' '.join(text.split())[:200]}" for text in samples[cid]]
        blocks.append("\n".join([f"{header.format(cid)}:", *lines]))
    ids = ", ".join(f'"{cid}"' for cid in sorted(samples))
    tail = f"需要命名的组号：{ids}。" if zh else f"Group numbers to name: {ids}."
    return [
        {"role": "system", "content": NAMING_SYSTEM["zh" if zh else "en"]},
        {"role": "user", "content": "\n\n".join([*blocks, tail])},
    ]


_LINE_NAME_RE = re.compile(
    r"^\s*(?:[-*•]\s*)?(?:\*\*)?(?:group|cluster|topic|第)?\s*\"?(\d+)\"?\s*(?:组|号)?(?:\*\*)?\s*[:：=)\].、\-–—]+\s*(.+?)\s*$",
    re.IGNORECASE,
)


def _clean_name(value: Any) -> str:
    if isinstance(value, dict):
        value = next((value[k] for k in ("name", "topic", "title", "名称") if k in value), "")
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return ""
    name = " ".join(str(value).split()).strip(" \"'`*,.;。，；")
    return name[:60].rstrip()


def parse_names(answer: str, ids: Iterable[int], locale: str = "en") -> dict[int, str]:
    """A name for each of `ids` from the chat engine's answer to `naming_prompt`.

    Tolerates code fences, text around the JSON, keys like "cluster 1", a list of {"id", "name"} objects, or
    "1: name" lines when there is no JSON. Ids it does not name get `default_topic_name(id, locale)`.
    """
    wanted = [int(i) for i in ids]
    text = (answer or "").replace("```json", "```").replace("```", "\n")
    found: dict[int, str] = {}

    def put(key: Any, value: Any) -> None:
        digits = re.search(r"\d+", str(key))
        name = _clean_name(value)
        if digits and name and int(digits.group(0)) not in found:
            found[int(digits.group(0))] = name

    for obj in _json_objects(text):
        for key, value in obj.items():
            put(key, value)
        if found:
            break
    if not found:
        lists = re.finditer(r"\[", text)
        for start in (m.start() for m in lists):
            try:
                items, _ = json.JSONDecoder().raw_decode(text, start)
            except ValueError:
                continue
            if isinstance(items, list):
                for item in items:
                    if isinstance(item, dict):
                        key = next((item[k] for k in ("id", "cluster", "group", "cluster_id") if k in item), None)
                        if key is not None:
                            put(key, item)
                if found:
                    break
    if not found:
        for line in text.splitlines():
            match = _LINE_NAME_RE.match(line)
            if match:
                put(match.group(1), match.group(2))
    return {cid: found.get(cid) or default_topic_name(cid, locale) for cid in wanted}
