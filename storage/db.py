"""The Store: one async engine, its session factory, and the repositories over it.

With no `DATABASE_URL` the store starts a private PostgreSQL (with pgvector) from the
`pgserver` wheel under `data_dir/postgres` and stops it on close; otherwise it connects to
the given server. Either way Alembic migrates the schema to head on open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import warnings
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from bot.settings import Settings
from storage.repositories import (
    AuditRepository,
    BlobRepository,
    ConversationRepository,
    DocumentRepository,
    EventRepository,
    IdentityRepository,
    ImageRepository,
    InstallationRepository,
    JobRepository,
    MemoryRepository,
    MessageRepository,
    MessageVectorRepository,
    ScopedSettingRepository,
    StateRepository,
    UsageRepository,
)

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Serialises migrations when several processes open the same database at once.
MIGRATION_LOCK_ID = 0x7465616D626F74


def asyncpg_url(url: str) -> URL:
    """`postgresql://` or `postgres://` (libpq style) -> an SQLAlchemy URL for the asyncpg driver."""
    parsed = make_url(url)
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise ValueError(f"DATABASE_URL must be a PostgreSQL URL, not {parsed.drivername}://")
    query = dict(parsed.query)
    # libpq spells it sslmode; asyncpg takes the same values as `ssl`.
    if "sslmode" in query:
        query["ssl"] = query.pop("sslmode")
    return parsed.set(drivername="postgresql+asyncpg", query=query)


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the bundled migrations, optionally bound to an open connection."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def run_upgrade(connection: Connection, revision: str = "head") -> None:
    """Migrate the database behind `connection` to `revision` (call through `run_sync`)."""
    connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    command.upgrade(alembic_config(connection), revision)


def _start_embedded(pgdata: Path) -> tuple[str, contextlib.ExitStack]:
    """Start (or join) the private server; the exit stack stops it when this process lets go."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset; harmless
        warnings.simplefilter("ignore", UserWarning)
        import pgserver  # imported lazily: only the embedded mode needs it

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    stack = contextlib.ExitStack()
    stack.enter_context(server)  # reference-counted inside pgserver per process
    return server.get_uri(), stack


class Store:
    """PostgreSQL behind typed repositories; open with `await Store.open(settings)`.

    Repositories open a short session per call and return frozen dataclasses, never ORM objects.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        blob_dir: Path,
        embedded: contextlib.ExitStack | None = None,
    ) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.blob_dir = blob_dir
        self._embedded = embedded
        self.events = EventRepository(self.sessions)
        self.identity = IdentityRepository(self.sessions)
        self.conversations = ConversationRepository(self.sessions)
        self.messages = MessageRepository(self.sessions)
        self.blobs = BlobRepository(self.sessions, blob_dir)
        self.jobs = JobRepository(self.sessions)
        self.usage = UsageRepository(self.sessions)
        self.audit = AuditRepository(self.sessions)
        self.scoped = ScopedSettingRepository(self.sessions)
        self.memory = MemoryRepository(self.sessions)
        self.installations = InstallationRepository(self.sessions)
        self.state = StateRepository(self.sessions)
        self.documents = DocumentRepository(self.sessions)
        self.message_vectors = MessageVectorRepository(self.sessions)
        self.images = ImageRepository(self.sessions)

    @property
    def embedded(self) -> bool:
        """True when this store runs its own PostgreSQL under the data directory."""
        return self._embedded is not None

    @classmethod
    async def open(cls, settings: Settings, *, migrate: bool = True, **engine_options: Any) -> Store:
        """Connect (starting the embedded server if needed) and migrate to head."""
        embedded: contextlib.ExitStack | None = None
        secret = settings.secrets.database_url
        if secret is None:
            pgdata = settings.data_dir / "postgres"
            started = time.perf_counter()
            raw_url, embedded = await asyncio.to_thread(_start_embedded, pgdata)
            log.info("embedded PostgreSQL ready in %.2fs at %s", time.perf_counter() - started, pgdata)
        else:
            raw_url = secret.get_secret_value()
        try:
            url = asyncpg_url(raw_url)
            options: dict[str, Any] = {"pool_size": 10, "max_overflow": 20, "pool_pre_ping": True}
            options.update(engine_options)
            engine = create_async_engine(url, **options)
            log.info("database %s", url.render_as_string(hide_password=True))
            store = cls(engine, settings.data_dir / "blobs", embedded)
        except BaseException:
            if embedded is not None:
                await asyncio.to_thread(embedded.close)
            raise
        try:
            if migrate:
                await store.migrate()
        except BaseException:
            await store.close()
            raise
        return store

    async def migrate(self, revision: str = "head") -> None:
        """Run Alembic migrations up to `revision`."""
        started = time.perf_counter()
        async with self.engine.begin() as conn:
            await conn.run_sync(run_upgrade, revision)
        log.info("schema at %s (%.2fs)", revision, time.perf_counter() - started)

    async def ping(self) -> float:
        """Seconds a `SELECT 1` round trip takes."""
        started = time.perf_counter()
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return time.perf_counter() - started

    async def close(self) -> None:
        """Flush buffered records, dispose of the connection pool, stop the embedded server if ours."""
        try:
            await self.jobs.close()
        except Exception:
            log.exception("could not flush job records at close")
        await self.engine.dispose()
        if self._embedded is not None:
            stack, self._embedded = self._embedded, None
            await asyncio.to_thread(stack.close)
            log.info("embedded PostgreSQL stopped")
