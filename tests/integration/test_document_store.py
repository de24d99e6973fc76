"""Knowledge-base storage against real PostgreSQL + pgvector: scope isolation, HNSW, words, all-or-nothing."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import text

from storage import Store
from storage.repositories import ChunkIn
from storage.repositories.documents import index_name

pytestmark = pytest.mark.asyncio(loop_scope="session")
MODEL = "test-model"
DIM = 16


def unit(seed: int) -> list[float]:
    rng = random.Random(seed)
    v = [rng.gauss(0, 1) for _ in range(DIM)]
    norm = sum(x * x for x in v) ** 0.5
    return [x / norm for x in v]


def chunks(texts: list[str], seed: int) -> list[ChunkIn]:
    return [ChunkIn(text=t, ord=i, page=i + 1, section=None, sha256=f"{seed}-{i}", search_text=t.lower(),
                    embedding=unit(seed + i)) for i, t in enumerate(texts)]


async def add(store: Store, ws: int, ch: int | None, name: str, texts: list[str], seed: int):  # type: ignore[no-untyped-def]
    return await store.documents.add(ws, ch, name=name, title=name, format="txt", sha256=f"sha-{name}",
                                     pages=len(texts), chars=sum(map(len, texts)), added_by="U1", model=MODEL,
                                     chunks=chunks(texts, seed))


async def test_search_never_crosses_workspaces_or_channel_scopes(store: Store) -> None:
    a = await store.identity.ensure("slack", "TA", "C-A1", "U1")
    a2 = await store.identity.ensure("slack", "TA", "C-A2", "U1")
    b = await store.identity.ensure("slack", "TB", "C-B1", "U1")
    await store.documents.ensure_index(MODEL, DIM)
    await add(store, a.workspace_pk, a.channel_pk, "a-channel.txt", ["alpha secret plan"], 100)
    await add(store, a.workspace_pk, None, "a-wide.txt", ["alpha handbook"], 200)
    await add(store, b.workspace_pk, None, "b-wide.txt", ["beta handbook secret"], 300)

    # The query vector equals the channel document's vector: it must still only come back where visible.
    query = unit(100)
    names = {h.document_name for h in await store.documents.search_vector(a.workspace_pk, a.channel_pk, MODEL,
                                                                          query, 10)}
    assert names == {"a-channel.txt", "a-wide.txt"}
    names = {h.document_name for h in await store.documents.search_vector(a2.workspace_pk, a2.channel_pk, MODEL,
                                                                          query, 10)}
    assert names == {"a-wide.txt"}
    names = {h.document_name for h in await store.documents.search_vector(b.workspace_pk, b.channel_pk, MODEL,
                                                                          query, 10)}
    assert names == {"b-wide.txt"}
    words = await store.documents.search_words(b.workspace_pk, b.channel_pk, ["secret"], 10)
    assert [h.document_name for h in words] == ["b-wide.txt"]
    assert await store.documents.search_words(a2.workspace_pk, a2.channel_pk, ["secret"], 10) == []
    assert [d.name for d in await store.documents.visible(a2.workspace_pk, a2.channel_pk)] == ["a-wide.txt"]
    assert await store.documents.find(b.workspace_pk, b.channel_pk, "a-wide") == []
    assert await store.documents.find_same(b.workspace_pk, None, "sha-a-wide.txt") is None
    assert (await store.documents.find_same(a2.workspace_pk, a2.channel_pk, "sha-a-wide.txt")) is not None


async def test_vector_search_uses_the_hnsw_index_and_finds_the_nearest(store: Store) -> None:
    who = await store.identity.ensure("slack", "TH", "C-H", "U1")
    await store.documents.ensure_index(MODEL, DIM)
    await store.documents.ensure_index(MODEL, DIM)  # idempotent
    await add(store, who.workspace_pk, None, "many.txt", [f"passage {i}" for i in range(300)], 1000)
    hits = await store.documents.search_vector(who.workspace_pk, who.channel_pk, MODEL, unit(1000 + 42), 5)
    assert hits[0].text == "passage 42" and hits[0].page == 43
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    async with store.sessions() as session:
        query = text("SELECT indexname FROM pg_indexes WHERE tablename = 'doc_chunk'")
        names = (await session.execute(query)).scalars()
        assert index_name("doc_chunk", MODEL, DIM) in set(names)
        await session.execute(text("SET enable_seqscan = off"))
        plan = "\n".join((await session.execute(text(
            f"EXPLAIN SELECT id FROM doc_chunk WHERE model = '{MODEL}' "
            f"ORDER BY embedding::vector({DIM}) <=> '{unit(1)}'::vector({DIM}) LIMIT 5"))).scalars())
    assert index_name("doc_chunk", MODEL, DIM) in plan
    # Another model's vectors are never compared with these.
    assert await store.documents.search_vector(who.workspace_pk, who.channel_pk, "other", unit(1), 5) == []


async def test_a_failed_write_leaves_no_document_behind(store: Store) -> None:
    who = await store.identity.ensure("slack", "TF", "C-F", "U1")
    bad = [*chunks(["fine"], 5), ChunkIn("broken", 1, 1, None, "x", "broken", embedding=[float("nan")] * DIM)]
    with pytest.raises(Exception):  # noqa: B017 - the database refuses NaN in a vector
        await store.documents.add(who.workspace_pk, None, name="n.txt", title="n", format="txt", sha256="s",
                                  pages=1, chars=4, added_by=None, model=MODEL, chunks=bad)
    assert await store.documents.visible(who.workspace_pk, None) == []
    assert await store.documents.count_chunks(who.workspace_pk, None) == 0


async def test_remove_deletes_the_chunks_with_the_document(store: Store) -> None:
    who = await store.identity.ensure("slack", "TR", "C-R", "U1")
    doc = await add(store, who.workspace_pk, who.channel_pk, "gone.txt", ["one", "two"], 7)
    assert await store.documents.count_chunks(who.workspace_pk, who.channel_pk) == 2
    assert [d.id for d in await store.documents.find(who.workspace_pk, who.channel_pk, "GONE")] == [doc.id]
    assert await store.documents.remove(doc.id)
    assert await store.documents.count_chunks(who.workspace_pk, who.channel_pk) == 0
    assert not await store.documents.remove(doc.id)
