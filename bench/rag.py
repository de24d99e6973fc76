"""Retrieval: document ingestion throughput, and vector search latency and recall at 100,000 chunks.

Ingestion: a `--pages`-page PDF of English (every fourth page also Chinese) text goes through the real document
reader (`engines.documents.DocumentReader`: read and split, `[docs]` chunk settings), the bundled embeddings model
(`engines.embeddings.E5Engine`, `--embed-batch` passages per call) and, as `handlers.docs` does it, `ensure_index`,
jieba segmentation and `DocumentRepository.add` into PostgreSQL: pages/s and chunks/s per stage and end to end.

Search: `--chunks` synthetic chunks (seeded unit vectors, 384-dim) go in through `DocumentRepository.add` (one
transaction per 10,000). 85% are visible from the queried channel A1 (workspace-wide documents of workspace A and
one of A1's own), 5% belong to channel A2 and 10% to workspace B, so the scope filter is real. `ensure_index` then
builds the HNSW index. `--queries` queries (half stored visible vectors plus noise, half random unit vectors) run
through `search_vector(k=5)` through the index and with `exact=True` (the baseline), each on a new connection:
p50/p95, the server's own time (EXPLAIN ANALYZE), recall@5 against the exact results (checked against numpy), other
`hnsw.ef_search` values, and the same from workspace B's channel, which sees only 10% of the index. One more run
sends `exact=True` on the connection that just ran the index searches, as the fallback in `search_vector` does: the
"generic" column counts executions PostgreSQL served from a cached generic plan.

`--vectors random` (uniform on the sphere, no neighbourhood structure: the worst case for HNSW) or `lowrank` (near a
24-dim subspace, closer to real embeddings). The embedded PostgreSQL runs in a temporary directory.

    .venv/bin/python bench/rag.py [--pages 200] [--chunks 100000] [--queries 200] [--vectors random|lowrank]
                                  [--ef-search 40,100,400] [--maintenance-work-mem 1GB] [--skip-ingest] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import event, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.settings import DocsSettings, load_settings
from storage.db import Store
from storage.repositories import ChunkIn, documents
from storage.repositories.documents import EF_SEARCH, index_name, vector_literal

DIM = 384
SYNTH_MODEL = "bench-synthetic-384"  # its own partial HNSW index, built after the bulk load
SEED = 20261129
DOC_CHUNKS = 10_000  # synthetic chunks per document (one `add` transaction each)
K = 5


@dataclass(frozen=True)
class Scope:
    workspace_pk: int
    channel_pk: int | None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


# -- ingestion ------------------------------------------------------------------------------------------------------

TOPICS = ["Travel and expenses", "On-call rota", "Release process", "Security review", "Office facilities",
          "Customer support", "Data retention", "Hiring and onboarding", "Incident response", "Budget planning"]
ENGLISH = [
    "Every request for reimbursement must be filed within {n} days of the trip, with the original receipts attached.",
    "The on-call engineer acknowledges a page within {n} minutes and posts a first update in the incident channel.",
    "Releases are cut from the main branch every {day}, after the integration suite has passed twice in a row.",
    "Access to production databases is granted for at most {n} hours and is reviewed by a second engineer.",
    "Meeting rooms on the {ordinal} floor can be booked up to {n} weeks ahead through the facilities portal.",
    "Support tickets marked urgent are answered within {n} hours, including weekends and public holidays.",
    "Customer data that is no longer needed is deleted after {n} months unless a legal hold applies.",
    "New hires receive their laptop on the first day and finish the security training within {n} days.",
    "After an incident the team writes a blameless review and shares it with the whole department by {day}.",
    "Each team proposes its budget for the next quarter by the {ordinal} week, with a short justification.",
    "Economy class is the default for flights under {n} hours; longer flights may be booked in premium economy.",
    "Hotel costs above {n} euros per night need the approval of the department head before the booking is made.",
    "The rota swaps on {day} at ten in the morning, and the outgoing engineer hands over any open incidents.",
    "A change that touches billing or authentication needs two approvals and a rollback plan in the description.",
    "Visitors sign in at the front desk and wear a badge; guests may not enter the server room unaccompanied.",
    "Logs containing personal data are kept for {n} days and are only searchable by the security team.",
    "Feature flags are removed no later than {n} weeks after a feature is fully rolled out.",
    "The quarterly planning meeting reviews last quarter's goals, the incident count and the hiring plan.",
    "Questions about this policy go to the operations team, who answer within {n} working days.",
    "Laptops are encrypted, locked after {n} minutes of inactivity, and reported within a day if lost.",
]
CHINESE = [
    "差旅报销须在出差结束后{n}天内提交，并附上原始发票。",
    "值班工程师须在{n}分钟内响应告警，并在事故频道发布第一次进展。",
    "新员工入职第一天领取电脑，并须在{n}天内完成安全培训。",
    "涉及计费或身份认证的改动需要两名同事批准，并在说明中写明回滚方案。",
    "不再需要的客户数据在{n}个月后删除，除非存在法律保全要求。",
    "每个团队须在季度第{n}周前提交下季度预算，并附简短说明。",
    "访客须在前台登记并佩戴访客证，未经陪同不得进入机房。",
    "事故结束后，团队须撰写不追责的复盘报告，并与整个部门分享。",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
ORDINALS = ["first", "second", "third", "fourth", "fifth"]


def page_text(rng: random.Random, number: int) -> str:
    """About 2,800 characters: a heading and four paragraphs; every fourth page has a Chinese paragraph."""

    def fill(sentence: str) -> str:
        return sentence.format(n=rng.randint(2, 90), day=rng.choice(DAYS), ordinal=rng.choice(ORDINALS))

    topic = TOPICS[number % len(TOPICS)]
    paragraphs = [f"{number // 10 + 1}.{number % 10 + 1} {topic}"]
    for p in range(4):
        if number % 4 == 3 and p == 2:
            paragraphs.append("".join(fill(s) for s in rng.sample(CHINESE, 5)))
        else:
            paragraphs.append(" ".join(fill(s) for s in rng.sample(ENGLISH, 6)))
    return "\n".join(paragraphs)


async def ingest_bench(store: Store, docs: DocsSettings, args: argparse.Namespace, figures: dict[str, Any]) -> None:
    from engines.base import EngineRequest
    from engines.documents import DocumentReader, ReadRequest, ReadResult
    from engines.embeddings import E5Engine, Embeddings, EmbedRequest
    from handlers.retrieval import segment
    from tests.support.docfiles import pdf

    rng = random.Random(SEED)
    pages = [page_text(rng, n) for n in range(args.pages)]
    data = pdf(pages)
    who = await store.identity.ensure("web", "bench-ingest", "docs", "bench")
    reader, embedder = DocumentReader(), E5Engine()
    # One-off costs, paid once per process in the service: llama-index's import and tokenizer, the E5 weights,
    # jieba's dictionary. Paid here on a one-page file so the stages below are steady-state.
    started = time.perf_counter()
    reader.read(EngineRequest(ReadRequest(pdf(pages[:1]), "warm.pdf", docs.chunk_size, docs.chunk_overlap)))
    embedder.load()
    embedder.run([EngineRequest(EmbedRequest(["warm up"], "passage"))])
    segment("预热 warm up")
    warm_s = time.perf_counter() - started

    started = time.perf_counter()
    request = ReadRequest(data, "handbook.pdf", docs.chunk_size, docs.chunk_overlap, max_pages=docs.max_pages)
    read = await asyncio.to_thread(reader.read, EngineRequest(request))
    read_s = time.perf_counter() - started
    assert isinstance(read, ReadResult) and read.pages == args.pages, read

    texts = [c.text for c in read.chunks]
    vectors: list[list[float]] = []
    started = time.perf_counter()
    for start in range(0, len(texts), args.embed_batch):
        [result] = await asyncio.to_thread(
            embedder.run, [EngineRequest(EmbedRequest(texts[start:start + args.embed_batch], "passage"))])
        assert isinstance(result, Embeddings), result
        vectors.extend(result.vectors)
    embed_s = time.perf_counter() - started

    started = time.perf_counter()
    await store.documents.ensure_index(embedder.model, embedder.dim)
    chunks = [ChunkIn(text=c.text, ord=c.ord, page=c.page, section=c.section, sha256=c.sha256,
                      search_text=segment(c.text), embedding=v) for c, v in zip(read.chunks, vectors, strict=True)]
    segment_s = time.perf_counter() - started
    row = await store.documents.add(who.workspace_pk, None, name="handbook.pdf", title=read.title, format=read.format,
                                    sha256=read.sha256, pages=read.pages, chars=read.chars, added_by="bench",
                                    model=embedder.model, chunks=chunks)
    store_s = time.perf_counter() - started
    assert row.chunks == len(texts)

    n_pages, n_chunks = read.pages, len(texts)
    total_s = read_s + embed_s + store_s
    print(f"ingest   {n_pages} pages ({len(data) / 1024:.0f} KB PDF, {read.chars} characters) -> {n_chunks} chunks of "
          f"<= {docs.chunk_size} tokens; one-off warm-up (llama-index, E5 weights, jieba) {warm_s:.1f} s")
    stages = {}
    for label, took in (("read+split", read_s), (f"embed ({args.embed_batch}/call)", embed_s),
                        ("store", store_s), ("end to end", total_s)):
        stages[label.split(" (")[0]] = {"s": took, "pages_per_s": n_pages / took, "chunks_per_s": n_chunks / took}
        print(f"  {label:<18} {took:7.2f} s  {n_pages / took:8.1f} pages/s  {n_chunks / took:8.1f} chunks/s")
    print(f"  (store: ensure_index and jieba segmentation {segment_s:.2f} s, one-transaction insert into the "
          f"indexed table {store_s - segment_s:.2f} s)")
    figures["ingest"] = {"pages": n_pages, "chunks": n_chunks, "chars": read.chars, "pdf_bytes": len(data),
                         "chunk_size": docs.chunk_size, "embed_batch": args.embed_batch, "warm_s": warm_s,
                         "segment_s": segment_s, "stages": stages}


# -- search at scale -----------------------------------------------------------------------------------------------

VectorMaker = Callable[[np.random.Generator, int], np.ndarray]


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` random unit vectors, uniform on the sphere."""
    rows = rng.standard_normal((n, DIM), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


class LowRank:
    """Unit vectors near a random `rank`-dimensional subspace: like real embeddings, neighbourhoods have structure."""

    def __init__(self, rng: np.random.Generator, rank: int = 24, noise: float = 0.3) -> None:
        self.basis = rng.standard_normal((rank, DIM), dtype=np.float32)
        self.rank, self.noise = rank, noise

    def __call__(self, rng: np.random.Generator, n: int) -> np.ndarray:
        rows = rng.standard_normal((n, self.rank), dtype=np.float32) @ self.basis
        rows += self.noise * np.sqrt(self.rank, dtype=np.float32) * rng.standard_normal((n, DIM), dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        return rows


async def load_synthetic(store: Store, n: int, rng: np.random.Generator, make: VectorMaker,
                         scopes: dict[str, Scope]) -> tuple[dict[str, int], float, np.ndarray]:
    """`n` chunks, "synthetic passage <number>", in documents of up to DOC_CHUNKS (one `add` each); returns the
    counts per part, the seconds `add` took, and the vectors of the visible chunks (numbers 0 .. visible - 1)."""
    visible = round(n * 0.85)
    other_channel = round(n * 0.05)
    parts = [("visible", visible, ["wide"] * 8 + ["own"]), ("other channel", other_channel, ["other"]),
             ("other workspace", n - visible - other_channel, ["b"])]
    kept = np.empty((visible, DIM), np.float32)
    number, took, doc = 0, 0.0, 0
    for _, count, scope_names in parts:
        per_scope = [count // len(scope_names) + (1 if i < count % len(scope_names) else 0)
                     for i in range(len(scope_names))]
        for scope_name, scope_count in zip(scope_names, per_scope, strict=True):
            scope = scopes[scope_name]
            for start in range(0, scope_count, DOC_CHUNKS):
                size = min(DOC_CHUNKS, scope_count - start)
                vectors = make(rng, size)
                if number < visible:
                    kept[number:number + size] = vectors
                chunks = [ChunkIn(text=f"synthetic passage {number + i}", ord=i, page=i // 4 + 1, section=None,
                                  sha256=f"{number + i:064x}", search_text=f"synthetic passage {number + i}",
                                  embedding=row.tolist()) for i, row in enumerate(vectors)]
                started = time.perf_counter()
                await store.documents.add(scope.workspace_pk, scope.channel_pk, name=f"synthetic-{doc}.txt",
                                          title=f"Synthetic {doc}", format="txt", sha256=f"synthetic-{doc}",
                                          pages=size // 4 + 1, chars=sum(len(c.text) for c in chunks),
                                          added_by=None, model=SYNTH_MODEL, chunks=chunks)
                took += time.perf_counter() - started
                number += size
                doc += 1
    return {name: count for name, count, _ in parts}, took, kept


def make_queries(rng: np.random.Generator, count: int, kept: np.ndarray) -> tuple[np.ndarray, int]:
    """Half stored visible vectors plus isotropic noise (cosine about 0.89 to their source), half random unit
    vectors."""
    near = min(count // 2, len(kept))
    sources = kept[rng.choice(len(kept), size=near, replace=False)]
    perturbed = sources + 0.5 * unit_rows(rng, near)
    perturbed /= np.linalg.norm(perturbed, axis=1, keepdims=True)
    return np.concatenate([perturbed, unit_rows(rng, count - near)]), near


def true_top(queries: np.ndarray, kept: np.ndarray) -> list[list[str]]:
    """The K nearest visible chunks by brute force in numpy (cosine = dot: all vectors are unit length)."""
    out: list[list[str]] = []
    for start in range(0, len(queries), 50):
        scores = queries[start:start + 50] @ kept.T
        top = np.argpartition(-scores, K, axis=1)[:, :K]
        for row, cand in zip(scores, top, strict=True):
            out.append([f"synthetic passage {i}" for i in cand[np.argsort(-row[cand])]])
    return out


class Captured:
    """The last vector-search statement SQLAlchemy sent, as the driver saw it (for EXPLAIN)."""

    def __init__(self) -> None:
        self.statement = ""
        self.parameters: Any = None

    def __call__(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.startswith("SELECT doc_chunk.id") and "<=>" in statement:
            self.statement, self.parameters = statement, parameters


async def explain(store: Store, captured: Captured, vector: np.ndarray, exact: bool) -> str:
    """EXPLAIN ANALYZE of the captured statement for `vector`, with the session settings search_vector uses."""
    params = [vector_literal(vector.tolist()) if isinstance(p, str) and p.startswith("[") else p
              for p in captured.parameters]
    async with store.engine.begin() as conn:
        if exact:
            await conn.execute(text("SET LOCAL enable_indexscan = off"))
        else:
            await conn.execute(text(f"SET LOCAL hnsw.ef_search = {max(documents.EF_SEARCH, K)}"))
        result = await conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + captured.statement,
                                            tuple(params))
        return "\n".join(row[0] for row in result)


def plan_summary(plan: str) -> str:
    """The plan's nodes on one line, without their details."""
    lines = plan.splitlines()
    nodes = lines[:1] + [line.strip()[2:].strip() for line in lines[1:] if line.strip().startswith("->")]
    return " -> ".join(node.split(" (actual")[0] for node in nodes)


def execution_ms(plan: str) -> float:
    for line in plan.splitlines():
        if line.strip().startswith("Execution Time:"):
            return float(line.split(":")[1].split()[0])
    return float("nan")


@dataclass
class Series:
    """One way of running the queries: latencies, results, fallbacks to the exact scan, and how PostgreSQL's
    plan cache served the search statement on the connection (generic plans are planned without the values)."""

    label: str
    latencies: list[float]
    texts: list[list[str]]
    fallbacks: int
    generic_plans: int
    custom_plans: int
    server_ms: float = float("nan")

    def p(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000


async def plan_counts(store: Store) -> tuple[int, int]:
    """Generic and custom plans of the search statement prepared on the pool's connection (the bench uses one)."""
    async with store.engine.connect() as conn:
        row = (await conn.execute(text(
            "SELECT coalesce(sum(generic_plans), 0), coalesce(sum(custom_plans), 0) FROM pg_prepared_statements "
            "WHERE statement LIKE 'SELECT doc_chunk.id%ORDER BY%'"))).one()
    return int(row[0]), int(row[1])


async def run_queries(store: Store, label: str, scope: Scope, queries: np.ndarray, exact: bool,
                      ef_search: int = EF_SEARCH, fresh: bool = True) -> Series:
    """Every query through `search_vector`, after a warm-up of 10, on a new connection unless not `fresh` (the
    plan cache is per connection). Counts the fallbacks to the exact scan: search_vector calls itself again,
    exactly, when the index scan found fewer than k."""
    if fresh:
        await store.engine.dispose()
    before = await plan_counts(store)
    repo = store.documents
    calls = 0
    original = repo.search_vector

    async def counting(*args: Any, **kwargs: Any) -> list[documents.ChunkHit]:
        nonlocal calls
        calls += 1
        return await original(*args, **kwargs)

    as_lists = [q.tolist() for q in queries]
    latencies, texts = [], []
    documents.EF_SEARCH = ef_search  # read by search_vector on each call
    try:
        for q in as_lists[:10]:
            await repo.search_vector(scope.workspace_pk, scope.channel_pk, SYNTH_MODEL, q, K, exact=exact)
        repo.search_vector = counting  # type: ignore[method-assign]
        for q in as_lists:
            started = time.perf_counter()
            hits = await counting(scope.workspace_pk, scope.channel_pk, SYNTH_MODEL, q, K, exact=exact)
            latencies.append(time.perf_counter() - started)
            texts.append([h.text for h in hits])
    finally:
        documents.EF_SEARCH = EF_SEARCH
        del repo.search_vector
    after = await plan_counts(store)
    return Series(label, latencies, texts, calls - len(as_lists), after[0] - before[0], after[1] - before[1])


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return statistics.fmean(len(set(f) & set(t)) / max(1, len(t)) for f, t in zip(found, truth, strict=True))


async def set_maintenance_work_mem(store: Store, value: str) -> None:
    """ALTER SYSTEM on the bench's own server, so the session ensure_index runs in builds with it."""
    async with store.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f"ALTER SYSTEM SET maintenance_work_mem = '{value}'"))
        await conn.execute(text("SELECT pg_reload_conf()"))
    await store.engine.dispose()  # new connections read the new setting for sure


async def search_bench(store: Store, args: argparse.Namespace, figures: dict[str, Any]) -> None:
    rng = np.random.default_rng(SEED)
    make: VectorMaker = unit_rows if args.vectors == "random" else LowRank(rng)
    ids = {name: await store.identity.ensure("web", ws, ch, "bench") for name, ws, ch in
           (("own", "bench-A", "A1"), ("other", "bench-A", "A2"), ("b", "bench-B", "B1"))}
    scopes = {"own": Scope(ids["own"].workspace_pk, ids["own"].channel_pk),
              "wide": Scope(ids["own"].workspace_pk, None),
              "other": Scope(ids["other"].workspace_pk, ids["other"].channel_pk),
              "b": Scope(ids["b"].workspace_pk, None),
              "b-channel": Scope(ids["b"].workspace_pk, ids["b"].channel_pk)}
    counts, load_s, kept = await load_synthetic(store, args.chunks, rng, make, scopes)
    started = time.perf_counter()
    async with store.engine.begin() as conn:  # what autovacuum would have done by now in a live system
        await conn.execute(text("ANALYZE doc_chunk"))
        await conn.execute(text("ANALYZE document"))
    analyze_s = time.perf_counter() - started
    print(f"load     {args.chunks} chunks, {args.vectors} unit vectors ({DIM}-dim): {counts['visible']} visible from "
          f"the queried channel A1, {counts['other channel']} in channel A2, {counts['other workspace']} in "
          f"workspace B; DocumentRepository.add {load_s:6.1f} s ({args.chunks / load_s:.0f} chunks/s), "
          f"ANALYZE {analyze_s:.1f} s")

    if args.maintenance_work_mem:
        await set_maintenance_work_mem(store, args.maintenance_work_mem)
    async with store.engine.connect() as conn:
        mwm = (await conn.execute(text("SHOW maintenance_work_mem"))).scalar()
        workers = (await conn.execute(text("SHOW max_parallel_maintenance_workers"))).scalar()
    started = time.perf_counter()
    await store.documents.ensure_index(SYNTH_MODEL, DIM)
    index_s = time.perf_counter() - started
    name = index_name("doc_chunk", SYNTH_MODEL, DIM)
    async with store.engine.connect() as conn:
        index_mb = (await conn.execute(text(f"SELECT pg_relation_size('{name}')"))).scalar_one() / 2**20
        table_mb = (await conn.execute(text("SELECT pg_table_size('doc_chunk')"))).scalar_one() / 2**20
    print(f"index    ensure_index: HNSW (m 16, ef_construction 64) built in {index_s:6.1f} s, {index_mb:.0f} MB "
          f"(table {table_mb:.0f} MB); maintenance_work_mem {mwm}, {workers} parallel maintenance workers")

    queries, near = make_queries(rng, args.queries, kept)
    truth = true_top(queries, kept)
    own, other_ws = scopes["own"], scopes["b-channel"]
    captured = Captured()
    event.listen(store.engine.sync_engine, "before_cursor_execute", captured)
    try:
        hnsw = await run_queries(store, f"hnsw, ef_search {EF_SEARCH}", own, queries, exact=False)
        # What a live connection sees: exact searches (the fallback) after index searches, one prepared statement.
        mixed = await run_queries(store, "exact, after hnsw", own, queries, exact=True, fresh=False)
        exact = await run_queries(store, "exact scan", own, queries, exact=True)
        plans = {}  # EXPLAIN ANALYZE of 20 of the queries, with the A1 statement just captured
        for series, is_exact in ((hnsw, False), (exact, True)):
            sample = [await explain(store, captured, q, is_exact) for q in queries[:: max(1, len(queries) // 20)]]
            series.server_ms = statistics.median(execution_ms(p) for p in sample)
            plans[series.label] = sample[-1]
        sweep = [await run_queries(store, f"hnsw, ef_search {ef}", own, queries, exact=False, ef_search=ef)
                 for ef in args.ef_search if ef != EF_SEARCH]
        narrow_hnsw = await run_queries(store, f"hnsw, ef_search {EF_SEARCH}", other_ws, queries, exact=False)
        narrow_exact = await run_queries(store, "exact scan", other_ws, queries, exact=True)
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", captured)

    n = len(queries)
    print(f"search   {n} queries, k={K}: {near} near-duplicates of a stored visible vector, {n - near} random unit "
          f"vectors; recall@{K} against the exact scan on its own connection")
    print(f"{'scope':<17} {'mode':<20} {'p50 ms':>7} {'p95 ms':>7} {'server':>7} {'recall':>6} {'near':>6} "
          f"{'random':>6} {'top-1':>7} {'fallback':>8} {'short':>7} {'generic':>7}")
    rows: dict[str, Any] = {}
    for scope_label, base, group in ((f"A1 {counts['visible']:>6} chunks", exact, [hnsw, exact, mixed, *sweep]),
                                     (f"B1 {counts['other workspace']:>6} chunks", narrow_exact,
                                      [narrow_hnsw, narrow_exact])):
        for series in group:
            r = recall(series.texts, base.texts)
            r_near = recall(series.texts[:near], base.texts[:near])
            r_random = recall(series.texts[near:], base.texts[near:])
            top1 = sum(1 for a, b in zip(series.texts, base.texts, strict=True) if a[:1] == b[:1])
            short = sum(1 for t in series.texts if len(t) < K)
            server = f"{series.server_ms:7.1f}" if series.server_ms == series.server_ms else f"{'':>7}"
            print(f"{scope_label:<17} {series.label:<20} {series.p(0.5):7.1f} {series.p(0.95):7.1f} {server} "
                  f"{r:6.3f} {r_near:6.3f} {r_random:6.3f} {top1:3d}/{n} {series.fallbacks:4d}/{n} {short:3d}/{n} "
                  f"{series.generic_plans:3d}/{series.generic_plans + series.custom_plans}")
            rows[f"{scope_label.split()[0]} {series.label}"] = {
                "p50_ms": series.p(0.5), "p95_ms": series.p(0.95), "server_p50_ms": series.server_ms,
                "recall_at_k": r, "recall_near": r_near, "recall_random": r_random, "top1_agrees": top1,
                "fallbacks_to_exact": series.fallbacks, "short_results": short,
                "generic_plans": series.generic_plans, "custom_plans": series.custom_plans}
    exact_vs_numpy = recall(exact.texts, truth)
    speedup = exact.p(0.5) / hnsw.p(0.5)
    mixed_vs_numpy = recall(mixed.texts, truth)
    print(f"ratio exact/hnsw p50 (A1): {speedup:.1f}x; recall@{K} of hnsw {recall(hnsw.texts, exact.texts):.3f}; "
          f"against numpy brute force: exact scan {exact_vs_numpy:.3f}, exact=True after hnsw on the same "
          f"connection {mixed_vs_numpy:.3f} ({mixed.generic_plans} of {n + 10} from a cached generic plan)")
    for label, plan in plans.items():
        print(f"plan {label}: {plan_summary(plan)}")
    if args.verbose:
        print(*plans.values(), sep="\n\n")
    figures["search"] = {
        "chunks": args.chunks, "vectors": args.vectors, "parts": counts, "load_s": load_s,
        "load_chunks_per_s": args.chunks / load_s, "analyze_s": analyze_s, "index_build_s": index_s,
        "index_mb": index_mb, "table_mb": table_mb, "maintenance_work_mem": mwm, "queries": len(queries),
        "near_duplicate_queries": near, "k": K, "rows": rows, "speedup_p50": speedup,
        "exact_vs_numpy_recall": exact_vs_numpy, "mixed_exact_vs_numpy_recall": mixed_vs_numpy, "plans": plans,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=200, help="pages of the ingested PDF")
    parser.add_argument("--embed-batch", type=int, default=32, help="passages per embeddings call")
    parser.add_argument("--chunks", type=int, default=100_000, help="synthetic chunks in the table searched")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--vectors", choices=["random", "lowrank"], default="lowrank",
                        help="random: uniform on the sphere (the worst case for HNSW); lowrank: near a 24-dim subspace")
    parser.add_argument("--ef-search", default="40,100,400",
                        help=f"hnsw.ef_search values to compare (the repository's own is {EF_SEARCH})")
    parser.add_argument("--maintenance-work-mem", help="e.g. 1GB: set on the bench's server before the index build "
                        "(default: the server's own, 64MB)")
    parser.add_argument("--verbose", action="store_true", help="print the full EXPLAIN ANALYZE plans")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    args.ef_search = [int(ef) for ef in args.ef_search.split(",") if ef]
    figures: dict[str, Any] = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-rag-") as data_dir:
        settings = load_settings(data_dir=data_dir, log_level="WARNING")
        settings.secrets.database_url = None  # always the embedded server, in the temporary directory
        store = await Store.open(settings)
        try:
            if not args.skip_ingest:
                await ingest_bench(store, settings.docs, args, figures)
            await search_bench(store, args, figures)
        finally:
            await store.close()
    figures["total_s"] = time.perf_counter() - started
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"total {figures['total_s']:.0f} s; bench process peak RSS {figures['peak_rss_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    asyncio.run(main())
