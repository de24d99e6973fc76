"""Image embeddings (CLIP) of uploaded and generated images, searched by cosine similarity (pgvector).

Every search is bounded to one workspace and one embedding model: vectors of different models are never
compared. A workspace with fewer than `EXACT_BELOW` images of the model is scanned exactly; a larger one
goes through the model's partial HNSW index (made by `ensure_index`), with the candidate list widened
by the inverse of the workspace's share, and falls back to an exact scan if the filter leaves too few.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, literal_column, select, update

from storage.models import Image
from storage.repositories.base import Repository
from storage.repositories.documents import (
    EF_SEARCH,
    cosine_distance,
    ensure_hnsw_index,
    nearest,
    search_plan,
    sql_string,
)

SOURCES = ("upload", "generated")
EXACT_BELOW = 5000  # a workspace with fewer images of the model is scanned exactly: fast, and never misses


@dataclass(frozen=True)
class ImageHit:
    """An image found by a search; `score` is the cosine similarity to the query."""

    id: int
    blob_id: int
    source: str
    prompt: str | None
    channel_pk: int | None
    score: float
    created_at: datetime


@dataclass(frozen=True)
class ImageRow:
    id: int
    workspace_pk: int
    channel_pk: int | None
    blob_id: int
    source: str
    prompt: str | None
    params: dict[str, Any] | None
    model: str | None  # None with vector None: kept without an embedding
    vector: list[float] | None
    created_at: datetime


def _row(i: Image) -> ImageRow:
    return ImageRow(i.id, i.workspace_id, i.channel_id, i.blob_id, i.source, i.prompt, i.params, i.model,
                    None if i.embedding is None else [float(x) for x in i.embedding], i.created_at)


class ImageRepository(Repository):
    """One row per (image blob, embedding model); reads are always scoped to a workspace."""

    async def ensure_index(self, model: str, dim: int) -> None:
        """The HNSW index over `model`'s image vectors, if it is not there yet (idempotent)."""
        await ensure_hnsw_index(self._sessions, "image", model, dim)

    async def add(self, workspace_pk: int, channel_pk: int | None, blob_id: int, source: str,
                  vector: Sequence[float] | None, model: str | None, prompt: str | None = None,
                  params: dict[str, Any] | None = None) -> int:
        """Keep one image (with its embedding, or with neither vector nor model: see `set_vector`); its row id."""
        if source not in SOURCES:
            raise ValueError(f"image source must be 'upload' or 'generated', not {source!r}")
        if (vector is None) != (model is None):
            raise ValueError("an image's vector and model are given together or not at all")
        embedding = None if vector is None else [float(v) for v in vector]
        stmt = insert(Image).values(workspace_id=workspace_pk, channel_id=channel_pk, blob_id=blob_id, source=source,
                                    prompt=prompt, params=params, model=model, embedding=embedding).returning(Image.id)
        async with self._sessions.begin() as session:
            return int((await session.execute(stmt)).scalar_one())

    async def set_vector(self, image_id: int, vector: Sequence[float], model: str) -> bool:
        """Give an image kept without an embedding (or with another model's) this model's vector."""
        stmt = (update(Image).where(Image.id == image_id)
                .values(model=model, embedding=[float(v) for v in vector]))
        async with self._sessions.begin() as session:
            result = await session.execute(stmt)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def unembedded(self, workspace_pk: int, limit: int = 100) -> list[ImageRow]:
        """The workspace's newest images that have no embedding yet (for a backfill once CLIP is configured)."""
        stmt = (select(Image).where(Image.workspace_id == workspace_pk, Image.embedding.is_(None))
                .order_by(Image.id.desc()).limit(limit))
        async with self._sessions() as session:
            return [_row(i) for i in (await session.execute(stmt)).scalars()]

    async def recent(self, workspace_pk: int, channel_pk: int | None, limit: int = 20) -> list[ImageRow]:
        """The conversation's images (one channel of a workspace), oldest first: the last `limit` of them.
        Query copies that /find embedded are rows too; an image counts once per blob."""
        stmt = (select(Image).where(Image.workspace_id == workspace_pk, Image.channel_id == channel_pk)
                .order_by(Image.id.desc()).limit(limit * 2))
        async with self._sessions() as session:
            rows = [_row(i) for i in (await session.execute(stmt)).scalars()]
        unique = list({r.blob_id: r for r in reversed(rows)}.values())  # oldest row of each blob, in order
        return unique[-limit:]

    async def get(self, image_id: int) -> ImageRow | None:
        async with self._sessions() as session:
            found = await session.get(Image, image_id)
        return None if found is None else _row(found)

    async def by_blob(self, blob_id: int, model: str | None = None) -> list[ImageRow]:
        """The rows of one blob (one per embedding model), newest first."""
        stmt = select(Image).where(Image.blob_id == blob_id).order_by(Image.id.desc())
        if model is not None:
            stmt = stmt.where(Image.model == model)
        async with self._sessions() as session:
            return [_row(i) for i in (await session.execute(stmt)).scalars()]

    async def count(self, workspace_pk: int, model: str | None = None) -> int:
        """The workspace's images (all of them, or those embedded by `model`)."""
        stmt = select(func.count()).select_from(Image).where(Image.workspace_id == workspace_pk)
        if model is not None:
            stmt = stmt.where(Image.model == model)
        async with self._sessions() as session:
            return int((await session.execute(stmt)).scalar_one())

    async def search(self, workspace_pk: int, vector: Sequence[float], model: str, limit: int = 5,
                     exclude_blob: int | None = None, *, exact: bool = False) -> list[ImageHit]:
        """The workspace's `limit` images of `model` nearest to `vector` (cosine), best first.

        `exclude_blob` leaves out one image (the one a "more like this" query starts from).
        """
        scope, ef_search = 0, EF_SEARCH
        if not exact:
            scope, total = await self._sizes(workspace_pk, model)
            if scope == 0:
                return []
            exact, ef_search = search_plan(scope, total, limit, EXACT_BELOW)
        distance = cosine_distance(Image.embedding, vector)
        stmt = (select(Image.id, Image.blob_id, Image.source, Image.prompt, Image.channel_id, Image.created_at,
                       (1 - distance).label("score"))
                # A literal model: a partial index is used only when the planner can prove its predicate.
                .where(literal_column(f"image.model = {sql_string(model)}"), Image.workspace_id == workspace_pk)
                .order_by(distance).limit(limit))
        if exclude_blob is not None:
            stmt = stmt.where(Image.blob_id != exclude_blob)
        hits = [ImageHit(r.id, r.blob_id, r.source, r.prompt, r.channel_id, float(r.score), r.created_at)
                for r in await nearest(self._sessions, stmt, exact, ef_search)]
        if len(hits) < limit and not exact and scope > len(hits):
            return await self.search(workspace_pk, vector, model, limit, exclude_blob, exact=True)
        return hits

    async def _sizes(self, workspace_pk: int, model: str) -> tuple[int, int]:
        """Images of `model` in the workspace, and in all workspaces."""
        stmt = (select(func.count().filter(Image.workspace_id == workspace_pk), func.count())
                .select_from(Image).where(Image.model == model))
        async with self._sessions() as session:
            scope, total = (await session.execute(stmt)).one()
        return int(scope), int(total)
