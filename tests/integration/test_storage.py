"""The Store against real PostgreSQL: schema, dedupe, identity, history, blobs, jobs, settings."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import Connection

from bot.settings import Settings
from engines.base import JobRecorder
from storage import Identity, Store, asyncpg_url
from storage.db import alembic_config
from storage.models import Base


async def _identity(store: Store, user: str = "U1", channel: str = "C1") -> Identity:
    return await store.identity.ensure("slack", "T1", channel, user, user_name="Ada")


# -- schema ---------------------------------------------------------------------------------


async def test_migrations_create_every_table_and_the_vector_extension(store: Store) -> None:
    async with store.engine.connect() as conn:
        tables = set(
            (
                await conn.execute(
                    text("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
                )
            ).scalars()
        )
        extensions = set((await conn.execute(text("SELECT extname FROM pg_extension"))).scalars())
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        constraints = set(
            (
                await conn.execute(
                    text(
                        "SELECT conname FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
                        " WHERE n.nspname = 'public'"
                    )
                )
            ).scalars()
        )
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    # compare_metadata ignores check constraints; names must still follow the models' convention.
    expected = {c.name for t in Base.metadata.tables.values() for c in t.constraints}
    assert constraints == expected | {"alembic_version_pkc"}
    assert "vector" in extensions
    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert version is not None and int(version) >= 2


async def test_models_match_the_migrations(store: Store) -> None:
    def diff(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_reopening_a_migrated_database_is_a_no_op(store_settings: Settings, store: Store) -> None:
    again = await Store.open(store_settings)
    try:
        assert await again.ping() > 0
    finally:
        await again.close()


def test_database_urls_are_converted_for_asyncpg() -> None:
    url = asyncpg_url("postgres://bot:s3cret@db.example:6543/teambot?sslmode=require")
    assert url.drivername == "postgresql+asyncpg"
    assert (url.host, url.port, url.database, url.password) == ("db.example", 6543, "teambot", "s3cret")
    assert dict(url.query) == {"ssl": "require"}
    assert "s3cret" not in repr(url)
    socket = asyncpg_url("postgresql://postgres:@/postgres?host=/tmp/pg")
    assert socket.drivername == "postgresql+asyncpg" and dict(socket.query) == {"host": "/tmp/pg"}
    with pytest.raises(ValueError):
        asyncpg_url("mysql://root@localhost/db")


async def test_the_password_never_reaches_the_log(
    database_url: str, store_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # The test server trusts local connections, so any password is accepted and ignored.
    store_settings.secrets.database_url = SecretStr(database_url.replace("postgres:@", "postgres:s3cret@"))
    with caplog.at_level(logging.DEBUG):
        store = await Store.open(store_settings)
        await store.close()
    assert "database postgresql+asyncpg://postgres:***@" in caplog.text
    assert "s3cret" not in caplog.text


# -- dedupe ---------------------------------------------------------------------------------


async def test_an_event_is_claimed_once(store: Store) -> None:
    assert await store.events.claim("slack", "Ev1") is True
    assert await store.events.claim("slack", "Ev1") is False
    assert await store.events.claim("discord", "Ev1") is True


async def test_twenty_concurrent_claims_of_one_event_have_one_winner(store: Store) -> None:
    results = await asyncio.gather(*(store.events.claim("slack", "Ev-race") for _ in range(20)))
    assert results.count(True) == 1


async def test_pruned_events_can_be_claimed_again(store: Store) -> None:
    await store.events.claim("web", "e1")
    assert await store.events.prune(timedelta(hours=1)) == 0
    assert await store.events.prune(timedelta(0)) == 1
    assert await store.events.claim("web", "e1") is True


# -- identity and conversations ---------------------------------------------------------------


async def test_identity_is_created_once_then_found(store: Store) -> None:
    first = await _identity(store)
    second = await _identity(store)
    assert first.is_new_user and not second.is_new_user
    assert (first.workspace_pk, first.channel_pk, first.user_pk) == (
        second.workspace_pk,
        second.channel_pk,
        second.user_pk,
    )
    assert first.role == "user" and first.workspace_locale is None and first.user_locale is None
    other = await _identity(store, user="U2")
    assert other.is_new_user and other.user_pk != first.user_pk and other.channel_pk == first.channel_pk


async def test_a_newcomer_sending_twice_at_once_gets_one_row(store: Store) -> None:
    results = await asyncio.gather(*(_identity(store, user="U-new", channel="C-new") for _ in range(10)))
    assert len({(r.workspace_pk, r.channel_pk, r.user_pk) for r in results}) == 1
    assert sum(r.is_new_user for r in results) == 1


async def test_roles_and_locales_are_returned_by_ensure(store: Store) -> None:
    me = await _identity(store)
    await store.identity.set_role(me.user_pk, "admin")
    await store.identity.set_user_locale(me.user_pk, "zh")
    await store.identity.set_workspace_locale(me.workspace_pk, "en")
    again = await _identity(store)
    assert (again.role, again.user_locale, again.workspace_locale) == ("admin", "zh", "en")
    with pytest.raises(ValueError):
        await store.identity.set_role(me.user_pk, "root")  # type: ignore[arg-type]


async def test_reset_starts_a_new_conversation(store: Store) -> None:
    me = await _identity(store)
    first = await store.conversations.current(me, "C1:U1")
    assert await store.conversations.current(me, "C1:U1") == first
    assert await store.conversations.current(me, "C1:thread") != first
    fresh = await store.conversations.reset(me, "C1:U1")
    assert fresh != first
    assert await store.conversations.current(me, "C1:U1") == fresh
    await store.messages.add(first, "user", "old")
    assert await store.messages.count(fresh) == 0


async def test_concurrent_first_messages_share_one_conversation(store: Store) -> None:
    me = await _identity(store)
    ids = await asyncio.gather(*(store.conversations.current(me, "dm:U1") for _ in range(10)))
    assert len(set(ids)) == 1


async def test_messages_come_back_oldest_first(store: Store) -> None:
    me = await _identity(store)
    conversation = await store.conversations.current(me, "k")
    for i in range(5):
        await store.messages.add(conversation, "user" if i % 2 == 0 else "assistant", f"m{i}", token_count=i)
    await store.messages.add(
        conversation, "user", "with file", attachments=[{"blob_id": 7, "name": "a.png"}], meta={"model": "x"}
    )
    recent = await store.messages.recent(conversation, 3)
    assert [m.content for m in recent] == ["m3", "m4", "with file"]
    assert recent[-1].attachments == [{"blob_id": 7, "name": "a.png"}] and recent[-1].meta == {"model": "x"}
    assert recent[0].attachments is None and recent[0].token_count == 3
    assert await store.messages.count(conversation) == 6


# -- blobs, jobs, usage, audit, scoped settings -------------------------------------------------


async def test_identical_blobs_share_one_file(store: Store) -> None:
    data = b"\x89PNG\r\n\x1a\n" + uuid.uuid4().bytes
    first = await store.blobs.put(None, "a.png", "image/png", data)
    second = await store.blobs.put(None, "b.png", "image/png", data, kind="generated")
    other = await store.blobs.put(None, "c.txt", "text/plain", b"hello")
    assert first.id != second.id and first.sha256 == second.sha256 and first.size == len(data)
    assert store.blobs.path(first) == store.blob_dir / first.sha256[:2] / first.sha256
    files = [p for p in store.blob_dir.rglob("*") if p.is_file()]
    assert sorted(files) == sorted({store.blobs.path(first), store.blobs.path(other)})
    assert await store.blobs.read(second.id) == data
    assert (await store.blobs.get(second.id)) == second
    assert (await store.blobs.by_sha(first.sha256)) == second
    assert await store.blobs.get(10_000) is None
    with pytest.raises(LookupError):
        await store.blobs.read(10_000)


async def test_job_recorder_round_trip(store: Store) -> None:
    recorder: JobRecorder = store.jobs
    ok, failed = uuid.uuid4().hex, uuid.uuid4().hex
    await recorder.job_queued(ok, "noop", "Ev1")
    queued = await store.jobs.get(ok)
    assert queued is not None and queued.status == "queued" and queued.started_at is None
    await recorder.job_started(ok, 0.25)
    await recorder.job_finished(ok, "done", 1.5)
    await recorder.job_queued(failed, "llm", None)
    await recorder.job_started(failed, 0.0)
    await recorder.job_finished(failed, "error", 0.1, "boom")
    done = await store.jobs.get(ok)
    assert done is not None
    assert (done.engine, done.event_id, done.status, done.queue_s, done.run_s, done.error) == (
        "noop",
        "Ev1",
        "done",
        0.25,
        1.5,
        None,
    )
    assert done.started_at is not None and done.finished_at is not None
    assert {j.id for j in await store.jobs.recent(10)} == {ok, failed}
    assert [j.error for j in await store.jobs.recent(10, engine="llm")] == ["boom"]
    assert await store.jobs.get("missing") is None


async def test_usage_totals_by_user_channel_and_workspace(store: Store) -> None:
    me = await _identity(store)
    other = await _identity(store, user="U2", channel="C2")
    since = datetime.now(UTC) - timedelta(minutes=1)
    for who, tokens in ((me, 10), (me, 5), (other, 100)):
        await store.usage.record(
            "llm",
            model="m",
            tokens_in=tokens,
            tokens_out=1,
            seconds=0.5,
            cost=0.01,
            workspace_pk=who.workspace_pk,
            channel_pk=who.channel_pk,
            user_pk=who.user_pk,
        )
    mine = await store.usage.totals(since, user_pk=me.user_pk)
    assert (mine.calls, mine.tokens_in, mine.tokens_out, mine.seconds) == (2, 15, 2, 1.0)
    assert mine.cost == Decimal("0.02")
    assert (await store.usage.totals(since, channel_pk=other.channel_pk)).tokens_in == 100
    assert (await store.usage.totals(since, workspace_pk=me.workspace_pk)).calls == 3
    assert (await store.usage.totals(datetime.now(UTC) + timedelta(minutes=1))).calls == 0


async def test_audit_log_lists_newest_first(store: Store) -> None:
    me = await _identity(store)
    await store.audit.log(
        "slack:U1", "role.set", {"user": "U2", "role": "admin"}, workspace_pk=me.workspace_pk
    )
    await store.audit.log("system", "migrate")
    entries = await store.audit.recent(10)
    assert [e.action for e in entries] == ["migrate", "role.set"]
    assert entries[1].detail == {"user": "U2", "role": "admin"} and entries[0].detail is None
    assert [e.action for e in await store.audit.recent(10, workspace_pk=me.workspace_pk)] == ["role.set"]


async def test_scoped_settings_set_get_delete(store: Store) -> None:
    assert await store.scoped.get("channel", 1) == {}
    await store.scoped.set("channel", 1, "model", "small", "slack:U1")
    await store.scoped.set("channel", 1, "limits", {"per_minute": 5}, "slack:U1")
    await store.scoped.set("channel", 1, "model", "large", "slack:U2")
    await store.scoped.set("workspace", 1, "model", "tiny", "slack:U1")
    assert await store.scoped.get("channel", 1) == {"model": "large", "limits": {"per_minute": 5}}
    assert await store.scoped.get("workspace", 1) == {"model": "tiny"}
    assert await store.scoped.delete("channel", 1, "model") is True
    assert await store.scoped.delete("channel", 1, "model") is False
    assert await store.scoped.get("channel", 1) == {"limits": {"per_minute": 5}}
    with pytest.raises(ValueError):
        await store.scoped.get("user", 1)  # type: ignore[arg-type]


# -- embedded mode ----------------------------------------------------------------------------


async def test_embedded_database_keeps_data_across_restarts(
    tmp_path: Any, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    settings = make_settings(tmp_path)
    assert settings.secrets.database_url is None
    store = await Store.open(settings)
    try:
        assert store.embedded
        me = await _identity(store)
        conversation = await store.conversations.current(me, "dm:U1")
        await store.messages.add(conversation, "user", "remember me")
    finally:
        await store.close()
    assert not (tmp_path / "postgres" / "postmaster.pid").exists(), "server still running after close"

    store = await Store.open(settings)
    try:
        again = await _identity(store)
        assert not again.is_new_user
        conversation = await store.conversations.current(again, "dm:U1")
        assert [m.content for m in await store.messages.recent(conversation, 10)] == ["remember me"]
    finally:
        await store.close()


async def test_identity_cache_serves_returning_users_and_forgets_on_change(store: Store) -> None:
    first = await store.identity.ensure("web", "w-cache", "c", "u")
    assert first.is_new_user
    again = await store.identity.ensure("web", "w-cache", "c", "u")
    assert not again.is_new_user and again.user_pk == first.user_pk
    await store.identity.set_role(first.user_pk, "admin")
    assert (await store.identity.ensure("web", "w-cache", "c", "u")).role == "admin"
