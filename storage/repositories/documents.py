"""Knowledge bases: documents and their chunks, searched by vector (pgvector HNSW) and by words.

Scope is enforced here, in every query: a search from a channel sees its workspace's workspace-wide
documents and that channel's own, nothing else. Writing a document is one transaction, so a failed
upload never leaves a partial knowledge base behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    ColumnElement,
    Executable,
    Float,
    Row,
    String,
    and_,
    cast,
    delete,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import FTS_CONFIG, DocChunk, Document
from storage.repositories.base import Repository, Sessions

EF_SEARCH = 100  # HNSW candidate list per query; filters (scope) apply after the index scan
MAX_EF_SEARCH = 1000
EXACT_BELOW = 20_000  # a scope with fewer chunks is searched exactly: faster than the index and never misses
INSERT_BATCH = 1000
INDEX_BUILD_MEMORY = "512MB"  # maintenance_work_mem for HNSW builds (the default 64MB spills: ~3x slower)


@dataclass(frozen=True)
class DocumentRow:
    id: int
    workspace_pk: int
    channel_pk: int | None  # None: the whole workspace's knowledge base
    name: str
    title: str
    format: str
    sha256: str
    pages: int
    chunks: int
    chars: int
    added_by: str | None
    created_at: datetime


@dataclass(frozen=True)
class ChunkIn:
    """A passage to store: its text, where it sits, and the words full-text search reads."""

    text: str
    ord: int
    page: int | None
    section: str | None
    sha256: str
    search_text: str
    embedding: Sequence[float]


@dataclass(frozen=True)
class ChunkHit:
    """A passage found by a search; `score` is cosine similarity (vector) or ts_rank_cd (words)."""

    id: int
    document_id: int
    document_name: str
    title: str
    ord: int
    page: int | None
    section: str | None
    text: str
    score: float


def vector_literal(vector: Sequence[float]) -> str:
    """pgvector's text form, sent as a bound string and cast in SQL."""
    return "[" + ",".join(f"{float(v):.7g}" for v in vector) + "]"


def cosine_distance(column: Any, vector: Sequence[float]) -> ColumnElement[float]:
    """`column::vector(dim) <=> query`: the expression the per-model HNSW indexes are built on."""
    dim = len(vector)
    query = cast(literal(vector_literal(vector), String), Vector(dim))
    return cast(column, Vector(dim)).op("<=>", return_type=Float)(query)


def sql_string(value: str) -> str:
    """A SQL string literal (for partial-index predicates, which a bound parameter cannot match)."""
    return "'" + value.replace("'", "''") + "'"


def index_name(table: str, model: str, dim: int) -> str:
    return f"ix_{table}_hnsw_{hashlib.sha1(model.encode()).hexdigest()[:10]}_{dim}"


def _row(d: Document) -> DocumentRow:
    return DocumentRow(d.id, d.workspace_id, d.channel_id, d.name, d.title, d.format, d.sha256, d.pages, d.chunks,
                       d.chars, d.added_by, d.created_at)


def _hit(row: Any) -> ChunkHit:
    return ChunkHit(row.id, row.document_id, row.name, row.title, row.ord, row.page, row.section, row.text,
                    float(row.score))


def _visible(column_ws: Any, column_ch: Any, workspace_pk: int, channel_pk: int | None) -> ColumnElement[bool]:
    """Rows of this workspace that are workspace-wide or belong to this channel."""
    channel = column_ch.is_(None) if channel_pk is None else or_(column_ch.is_(None), column_ch == channel_pk)
    return and_(column_ws == workspace_pk, channel)


async def ensure_hnsw_index(sessions: Sessions, table: str, model: str, dim: int, column: str = "embedding") -> None:
    """The partial HNSW index (cosine) over one embedding model's vectors in `table`, if it is not there yet.

    `table` must have a text `model` column and a dimensionless vector `column`; searches must use
    `cosine_distance(column, vector)` and a literal `model = '...'` predicate for the planner to pick it.
    """
    name = index_name(table, model, dim)
    ddl = (f"CREATE INDEX IF NOT EXISTS {name} ON {table} USING hnsw "
           f"(({column}::vector({int(dim)})) vector_cosine_ops) WHERE model = {sql_string(model)}")
    async with sessions.begin() as session:
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:n))"), {"n": name})
        await session.execute(text(f"SET LOCAL maintenance_work_mem = '{INDEX_BUILD_MEMORY}'"))
        await session.execute(text(ddl))


def search_plan(scope: int, total: int, k: int, exact_below: int) -> tuple[bool, int]:
    """(exact, ef_search) for a search that sees `scope` of one model's `total` vectors.

    pgvector 0.6 filters the index's candidates by scope afterwards, so a scope with a small share of the
    model's vectors would lose most of them: under `exact_below` it is scanned exactly, and above that the
    candidate list widens by the inverse of its share (at most `MAX_EF_SEARCH`).
    """
    if scope < exact_below:
        return True, EF_SEARCH
    share = scope / max(1, total)
    return False, min(MAX_EF_SEARCH, max(EF_SEARCH, k, round(EF_SEARCH / share)))


async def nearest(sessions: Sessions, stmt: Executable, exact: bool, ef_search: int) -> Sequence[Row[Any]]:
    """The rows of a nearest-neighbour select: an exact scan (index scans off) or through HNSW with `ef_search`.
    Plans are never cached (`force_custom_plan`): a cached index plan would otherwise ignore `enable_indexscan`."""
    async with sessions.begin() as session:
        setting = "SET LOCAL enable_indexscan = off" if exact else f"SET LOCAL hnsw.ef_search = {ef_search}"
        await session.execute(text(setting))
        await session.execute(text("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)"))
        return (await session.execute(stmt)).all()


class DocumentRepository(Repository):
    """Documents and chunks, always read through a (workspace, channel) scope."""

    async def ensure_index(self, model: str, dim: int, table: str = "doc_chunk", column: str = "embedding") -> None:
        """The HNSW index for one embedding model's vectors (cosine), if it is not there yet."""
        await ensure_hnsw_index(self._sessions, table, model, dim, column)

    async def find_same(self, workspace_pk: int, channel_pk: int | None, sha256: str) -> DocumentRow | None:
        """A document with this content already visible from the scope."""
        stmt = select(Document).where(_visible(Document.workspace_id, Document.channel_id, workspace_pk, channel_pk),
                                      Document.sha256 == sha256).limit(1)
        async with self._sessions() as session:
            found = (await session.execute(stmt)).scalar_one_or_none()
        return None if found is None else _row(found)

    async def add(self, workspace_pk: int, channel_pk: int | None, *, name: str, title: str, format: str,
                  sha256: str, pages: int, chars: int, added_by: str | None, model: str,
                  chunks: Sequence[ChunkIn]) -> DocumentRow:
        """Store a document and all its chunks in one transaction (all or nothing)."""
        async with self._sessions.begin() as session:
            doc = Document(workspace_id=workspace_pk, channel_id=channel_pk, name=name, title=title, format=format,
                           sha256=sha256, pages=pages, chunks=len(chunks), chars=chars, added_by=added_by)
            session.add(doc)
            await session.flush()
            await self._insert_chunks(session, doc.id, workspace_pk, channel_pk, model, chunks)
            await session.refresh(doc)
            return _row(doc)

    @staticmethod
    async def _insert_chunks(session: AsyncSession, document_id: int, workspace_pk: int, channel_pk: int | None,
                             model: str, chunks: Sequence[ChunkIn]) -> None:
        for start in range(0, len(chunks), INSERT_BATCH):
            rows = [
                {"document_id": document_id, "workspace_id": workspace_pk, "channel_id": channel_pk, "ord": c.ord,
                 "page": c.page, "section": c.section, "text": c.text, "search_text": c.search_text,
                 "sha256": c.sha256, "model": model, "embedding": list(c.embedding)}
                for c in chunks[start:start + INSERT_BATCH]
            ]
            await session.execute(insert(DocChunk), rows)

    async def visible(self, workspace_pk: int, channel_pk: int | None) -> list[DocumentRow]:
        stmt = (select(Document)
                .where(_visible(Document.workspace_id, Document.channel_id, workspace_pk, channel_pk))
                .order_by(Document.id))
        async with self._sessions() as session:
            return [_row(d) for d in (await session.execute(stmt)).scalars()]

    async def find(self, workspace_pk: int, channel_pk: int | None, ref: str) -> list[DocumentRow]:
        """Documents visible from the scope matching `ref`: an id, or a name/title (exact, then prefix)."""
        ref = ref.strip().lstrip("#")
        visible = _visible(Document.workspace_id, Document.channel_id, workspace_pk, channel_pk)
        async with self._sessions() as session:
            if ref.isdigit():
                stmt = select(Document).where(visible, Document.id == int(ref))
                return [_row(d) for d in (await session.execute(stmt)).scalars()]
            lowered = ref.lower()
            for condition in (
                or_(func.lower(Document.name) == lowered, func.lower(Document.title) == lowered),
                or_(func.lower(Document.name).startswith(lowered, autoescape=True),
                    func.lower(Document.title).startswith(lowered, autoescape=True)),
            ):
                rows = (await session.execute(select(Document).where(visible, condition))).scalars().all()
                if rows:
                    return [_row(d) for d in rows]
        return []

    async def remove(self, document_id: int) -> bool:
        async with self._sessions.begin() as session:
            result = await session.execute(delete(Document).where(Document.id == document_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def chunks(self, document_id: int) -> list[ChunkHit]:
        """A document's passages in order (for summaries)."""
        stmt = (select(DocChunk, Document.name, Document.title).join(Document, Document.id == DocChunk.document_id)
                .where(DocChunk.document_id == document_id).order_by(DocChunk.ord))
        async with self._sessions() as session:
            rows = (await session.execute(stmt)).all()
        return [ChunkHit(c.id, c.document_id, name, title, c.ord, c.page, c.section, c.text, 1.0)
                for c, name, title in rows]

    async def search_vector(self, workspace_pk: int, channel_pk: int | None, model: str, vector: Sequence[float],
                            k: int, *, exact: bool = False) -> list[ChunkHit]:
        """The `k` passages nearest to `vector` (cosine), through the model's HNSW index unless `exact`.

        pgvector 0.6 filters the index's candidates by scope afterwards, so a scope that sees a small
        share of the model's chunks would lose most of them: scopes under `EXACT_BELOW` chunks are
        searched exactly, and larger ones widen the candidate list by the inverse of their share. If the
        filter still leaves fewer than `k`, the search runs again exactly. Plans are never cached
        (`force_custom_plan`): a cached index plan would otherwise ignore `enable_indexscan = off`.
        """
        scope_chunks, ef_search = 0, EF_SEARCH
        if not exact:
            scope_chunks, all_chunks = await self.sizes(workspace_pk, channel_pk)
            if scope_chunks == 0:
                return []
            exact, ef_search = search_plan(scope_chunks, all_chunks, k, EXACT_BELOW)
        # A literal model: a partial index is used only when the planner can prove its predicate.
        distance = cosine_distance(DocChunk.embedding, vector)
        stmt = (
            select(DocChunk.id, DocChunk.document_id, Document.name, Document.title, DocChunk.ord, DocChunk.page,
                   DocChunk.section, DocChunk.text, (1 - distance).label("score"))
            .join(Document, Document.id == DocChunk.document_id)
            .where(literal_column(f"doc_chunk.model = {sql_string(model)}"),
                   _visible(DocChunk.workspace_id, DocChunk.channel_id, workspace_pk, channel_pk))
            .order_by(distance).limit(k)
        )
        hits = [_hit(row) for row in await nearest(self._sessions, stmt, exact, ef_search)]
        if len(hits) < k and not exact and scope_chunks > len(hits):
            return await self.search_vector(workspace_pk, channel_pk, model, vector, k, exact=True)
        return hits

    async def sizes(self, workspace_pk: int, channel_pk: int | None) -> tuple[int, int]:
        """Chunks visible from the scope, and in every knowledge base, from the document rows (cheap:
        one row per document, not per chunk)."""
        visible = _visible(Document.workspace_id, Document.channel_id, workspace_pk, channel_pk)
        stmt = select(func.coalesce(func.sum(Document.chunks).filter(visible), 0),
                      func.coalesce(func.sum(Document.chunks), 0))
        async with self._sessions() as session:
            scope, total = (await session.execute(stmt)).one()
        return int(scope), int(total)

    async def count_chunks(self, workspace_pk: int, channel_pk: int | None, model: str | None = None) -> int:
        stmt = select(func.count()).select_from(DocChunk).where(
            _visible(DocChunk.workspace_id, DocChunk.channel_id, workspace_pk, channel_pk))
        if model is not None:
            stmt = stmt.where(DocChunk.model == model)
        async with self._sessions() as session:
            return int((await session.execute(stmt)).scalar_one())

    async def search_words(self, workspace_pk: int, channel_pk: int | None, terms: Sequence[str],
                           k: int) -> list[ChunkHit]:
        """Passages containing any of `terms` (already segmented words), best ts_rank_cd first."""
        words = [w for w in dict.fromkeys(t.strip().lower() for t in terms) if w]
        if not words:
            return []
        config: ColumnElement[Any] = literal_column(f"'{FTS_CONFIG}'::regconfig")
        query = func.to_tsquery(config, " | ".join("'" + w.replace("'", "''").replace("\\", "") + "'" for w in words))
        vector = func.to_tsvector(config, DocChunk.search_text)
        rank = func.ts_rank_cd(vector, query)
        stmt = (
            select(DocChunk.id, DocChunk.document_id, Document.name, Document.title, DocChunk.ord, DocChunk.page,
                   DocChunk.section, DocChunk.text, rank.label("score"))
            .join(Document, Document.id == DocChunk.document_id)
            .where(vector.op("@@")(query), _visible(DocChunk.workspace_id, DocChunk.channel_id, workspace_pk,
                                                    channel_pk))
            .order_by(rank.desc(), DocChunk.id).limit(k)
        )
        async with self._sessions() as session:
            rows = (await session.execute(stmt)).all()
        return [_hit(row) for row in rows]
