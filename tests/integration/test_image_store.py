"""Image embeddings against real PostgreSQL + pgvector: ranking, workspace and model isolation, HNSW, migration."""

from __future__ import annotations

import random

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from storage import Store
from storage.db import alembic_config
from storage.repositories import images as images_module
from storage.repositories.documents import index_name

pytestmark = pytest.mark.asyncio(loop_scope="session")
MODEL = "tiny-clip"
DIM = 16


def unit(seed: int, dim: int = DIM) -> list[float]:
    rng = random.Random(seed)
    v = [rng.gauss(0, 1) for _ in range(dim)]
    norm = sum(x * x for x in v) ** 0.5
    return [x / norm for x in v]


def towards(base: list[float], other: list[float], t: float) -> list[float]:
    """A unit vector a fraction `t` of the way from `base` to `other` (t=0: base itself)."""
    v = [(1 - t) * a + t * b for a, b in zip(base, other, strict=True)]
    norm = sum(x * x for x in v) ** 0.5
    return [x / norm for x in v]


async def blob(store: Store, workspace_pk: int, name: str) -> int:
    return (await store.blobs.put(workspace_pk, name, "image/png", f"png bytes of {name}".encode())).id


async def test_search_ranks_the_nearest_first_and_excludes_the_query_image(store: Store) -> None:
    who = await store.identity.ensure("slack", "T1", "C1", "U1")
    ws, ch = who.workspace_pk, who.channel_pk
    query, far = unit(1), unit(2)
    ids = {}
    for t in (0.6, 0.0, 0.9, 0.3):  # inserted out of order on purpose
        blob_id = await blob(store, ws, f"{t}.png")
        ids[t] = (await store.images.add(ws, ch, blob_id, "generated", towards(query, far, t), MODEL,
                                         prompt=f"prompt {t}", params={"steps": 20, "t": t}), blob_id)
    hits = await store.images.search(ws, query, MODEL, limit=3)
    assert [h.id for h in hits] == [ids[0.0][0], ids[0.3][0], ids[0.6][0]]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].score > hits[1].score > hits[2].score
    assert hits[1].prompt == "prompt 0.3" and hits[1].source == "generated" and hits[1].channel_pk == ch
    assert hits[1].blob_id == ids[0.3][1]

    # "More like this" leaves the starting image out.
    more = await store.images.search(ws, query, MODEL, limit=10, exclude_blob=ids[0.0][1])
    assert [h.id for h in more] == [ids[0.3][0], ids[0.6][0], ids[0.9][0]]

    row = await store.images.get(ids[0.3][0])
    assert row is not None and row.params == {"steps": 20, "t": 0.3} and row.model == MODEL
    assert row.blob_id == ids[0.3][1] and row.vector is not None
    assert row.vector == pytest.approx(towards(query, far, 0.3), abs=1e-6)
    assert [r.id for r in await store.images.by_blob(ids[0.9][1])] == [ids[0.9][0]]
    assert await store.images.by_blob(ids[0.9][1], model="other") == []
    assert await store.images.get(10_000_000) is None
    assert await store.images.count(ws) == 4


async def test_searches_never_cross_workspaces_or_models(store: Store) -> None:
    a = await store.identity.ensure("slack", "TA", "C-A", "U1")
    b = await store.identity.ensure("slack", "TB", "C-B", "U1")
    vector = unit(7)
    in_a = await store.images.add(a.workspace_pk, a.channel_pk, await blob(store, a.workspace_pk, "a.png"), "upload",
                                  vector, MODEL)
    in_b = await store.images.add(b.workspace_pk, None, await blob(store, b.workspace_pk, "b.png"), "upload", vector,
                                  MODEL)
    # The same image embedded by another model (of another dimension) in workspace A.
    other = await store.images.add(a.workspace_pk, a.channel_pk, await blob(store, a.workspace_pk, "a2.png"),
                                   "upload", unit(7, 32), "other-clip")

    assert [h.id for h in await store.images.search(a.workspace_pk, vector, MODEL, limit=10)] == [in_a]
    assert [h.id for h in await store.images.search(b.workspace_pk, vector, MODEL, limit=10)] == [in_b]
    assert [h.id for h in await store.images.search(a.workspace_pk, unit(7, 32), "other-clip", limit=10)] == [other]
    assert await store.images.search(b.workspace_pk, unit(7, 32), "other-clip", limit=10) == []
    assert await store.images.search(a.workspace_pk, vector, "never-used", limit=10) == []
    assert await store.images.count(a.workspace_pk) == 2
    assert await store.images.count(a.workspace_pk, model=MODEL) == 1
    assert await store.images.count(b.workspace_pk) == 1
    with pytest.raises(ValueError):
        await store.images.add(a.workspace_pk, None, 1, "stolen", vector, MODEL)
    with pytest.raises(ValueError):
        await store.images.add(a.workspace_pk, None, 1, "upload", vector, None)


async def test_an_image_kept_without_a_vector_is_counted_but_never_found_until_embedded(store: Store) -> None:
    who = await store.identity.ensure("slack", "TU", "C-U", "U1")
    blob_id = await blob(store, who.workspace_pk, "plain.png")
    image_id = await store.images.add(who.workspace_pk, who.channel_pk, blob_id, "upload", None, None)
    row = await store.images.get(image_id)
    assert row is not None and row.vector is None and row.model is None
    assert await store.images.count(who.workspace_pk) == 1
    assert await store.images.count(who.workspace_pk, model=MODEL) == 0
    assert await store.images.search(who.workspace_pk, unit(4), MODEL) == []
    assert [r.id for r in await store.images.unembedded(who.workspace_pk)] == [image_id]

    assert await store.images.set_vector(image_id, unit(4), MODEL)
    assert await store.images.unembedded(who.workspace_pk) == []
    hits = await store.images.search(who.workspace_pk, unit(4), MODEL)
    assert [h.id for h in hits] == [image_id] and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert not await store.images.set_vector(10_000_000, unit(4), MODEL)


async def test_large_workspaces_search_through_the_hnsw_index(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images_module, "EXACT_BELOW", 50)  # the index path without inserting thousands of rows
    who = await store.identity.ensure("slack", "TH", "C-H", "U1")
    small = await store.identity.ensure("slack", "TS", "C-S", "U1")
    await store.images.ensure_index(MODEL, DIM)
    await store.images.ensure_index(MODEL, DIM)  # idempotent
    shared = await blob(store, who.workspace_pk, "shared.png")
    ids = [await store.images.add(who.workspace_pk, who.channel_pk, shared, "upload", unit(1000 + i), MODEL)
           for i in range(200)]
    only = await store.images.add(small.workspace_pk, None, await blob(store, small.workspace_pk, "s.png"), "upload",
                                  unit(1000 + 42), MODEL)

    hits = await store.images.search(who.workspace_pk, unit(1000 + 42), MODEL, limit=5)
    assert hits[0].id == ids[42] and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    exact = await store.images.search(who.workspace_pk, unit(1000 + 42), MODEL, limit=5, exact=True)
    assert [h.id for h in exact][:3] == [h.id for h in hits][:3]
    # A workspace holding a tiny share of the model's rows still finds its own image through the index
    # (its candidate list widened by the inverse of its share).
    monkeypatch.setattr(images_module, "EXACT_BELOW", 1)
    assert [h.id for h in await store.images.search(small.workspace_pk, unit(5), MODEL, limit=3)] == [only]

    name = index_name("image", MODEL, DIM)
    async with store.sessions() as session:
        names = set((await session.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'image'")))
                    .scalars())
        assert name in names
        await session.execute(text("SET enable_seqscan = off"))
        plan = "\n".join((await session.execute(text(
            f"EXPLAIN SELECT id FROM image WHERE model = '{MODEL}' "
            f"ORDER BY embedding::vector({DIM}) <=> '{unit(1)}'::vector({DIM}) LIMIT 5"))).scalars())
    assert name in plan


async def test_deleting_the_blob_deletes_its_image_rows(store: Store) -> None:
    who = await store.identity.ensure("slack", "TD", "C-D", "U1")
    blob_id = await blob(store, who.workspace_pk, "gone.png")
    await store.images.add(who.workspace_pk, who.channel_pk, blob_id, "upload", unit(3), MODEL)
    async with store.sessions.begin() as session:
        await session.execute(text("DELETE FROM blob WHERE id = :id"), {"id": blob_id})
    assert await store.images.count(who.workspace_pk) == 0


async def test_the_migration_goes_down_and_up_again(store: Store) -> None:
    who = await store.identity.ensure("slack", "TM", "C-M", "U1")
    await store.images.add(who.workspace_pk, None, await blob(store, who.workspace_pk, "m.png"), "upload", unit(9),
                           MODEL)
    await store.images.ensure_index(MODEL, DIM)

    def downgrade(conn: Connection) -> None:
        command.downgrade(alembic_config(conn), "0005")

    async def tables() -> set[str]:
        async with store.engine.connect() as conn:
            query = text("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
            return set((await conn.execute(query)).scalars())

    async with store.engine.begin() as conn:
        await conn.run_sync(downgrade)
    after = await tables()
    assert "image" not in after and {"document", "doc_chunk", "blob"} <= after
    await store.migrate()
    assert "image" in await tables()
    assert await store.images.count(who.workspace_pk) == 0
    await store.images.add(who.workspace_pk, None, await blob(store, who.workspace_pk, "m2.png"), "upload", unit(9),
                           MODEL)
    assert len(await store.images.search(who.workspace_pk, unit(9), MODEL)) == 1
