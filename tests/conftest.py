"""Shared fixtures. Database: one embedded PostgreSQL per test session, a fresh database per test.

- `pg_server`: the session's pgserver (`.get_uri(dbname)` gives a libpq URL).
- `database_url`: a new, empty database on it, as a `postgresql://` URL; dropped afterwards.
- `make_settings(data_dir, database_url=None, **overrides)`: hermetic `Settings` (no bot.toml).
- `store_settings`: `Settings` with `data_dir=tmp_path` and `DATABASE_URL` pointing at that database.
- `store`: an open, migrated `Store` on it; closed afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
import pytest_asyncio
from pydantic import SecretStr

from bot.app import RunningApp, start
from bot.settings import EngineSettings, Settings, load_settings
from storage.db import Store
from tests.support.openai_stub import OpenAIStub

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer

    from tests.support.image_models import TinyModels


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL (with pgvector) for the whole test session, deleted at the end."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore", UserWarning)
        import pgserver

    # Outside pytest's basetemp, which a concurrent pytest run may prune.
    root = Path(tempfile.mkdtemp(prefix="teambot-pg-"))
    server = pgserver.get_server(root / "data", cleanup_mode="delete")
    # Throwaway data: skip the disk flushes that make CREATE DATABASE and commits slow.
    server.psql(
        "ALTER SYSTEM SET fsync = off; ALTER SYSTEM SET synchronous_commit = off; SELECT pg_reload_conf();"
    )
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest_asyncio.fixture(loop_scope="session")
async def database_url(pg_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh empty database for one test, as a `postgresql://` URL."""
    name = f"t_{uuid.uuid4().hex}"
    admin = await asyncpg.connect(pg_server.get_uri())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield pg_server.get_uri(name)
    try:
        admin = await asyncpg.connect(pg_server.get_uri())
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
    except (OSError, asyncpg.PostgresError):
        pass  # best effort: the whole server is deleted at session end anyway


def hermetic_settings(data_dir: Path, database_url: str | None = None, **overrides: Any) -> Settings:
    """Settings from defaults and the environment only (no bot.toml), with the given database."""
    empty = data_dir / "empty.toml"
    empty.parent.mkdir(parents=True, exist_ok=True)
    empty.write_text("", encoding="utf-8")
    settings = load_settings(empty, data_dir=data_dir, **overrides)
    settings.secrets.database_url = SecretStr(database_url) if database_url else None
    return settings


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """`make_settings(data_dir, database_url=None, **overrides)`; no URL means the embedded server."""
    return hermetic_settings


@pytest.fixture
def store_settings(tmp_path: Path, database_url: str) -> Settings:
    return hermetic_settings(tmp_path, database_url)


@pytest_asyncio.fixture(loop_scope="session")
async def store(store_settings: Settings) -> AsyncIterator[Store]:
    """An open Store on this test's own database, migrated to head."""
    opened = await Store.open(store_settings)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """Tiny random-weight Stable Diffusion (+ upscaler, ControlNet, LoRA, detectors), CLIP and OWL-ViT folders."""
    from tests.support.image_models import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny-image-models"))


@pytest_asyncio.fixture(loop_scope="session")
async def openai_stub() -> AsyncIterator[OpenAIStub]:
    """A loopback OpenAI-compatible API that records every request (see tests/support/openai_stub.py)."""
    async with OpenAIStub() as stub:
        yield stub


def stub_engines(stub: OpenAIStub) -> dict[str, EngineSettings]:
    """The chat, fine-tuning and embeddings engines pointed at the stand-in."""
    return {
        "llm": EngineSettings(impl="engines.llm:ChatEngine", device="remote", max_batch=8, concurrency=4,
                              options={"provider": "openai", "base_url": f"{stub.url}/v1", "model": "gpt-4o-mini",
                                       "max_retries": 2, "timeout_s": 10}),
        "finetune": EngineSettings(impl="engines.finetune:FineTuneEngine", device="remote",
                                   options={"base_url": f"{stub.url}/v1", "max_retries": 0}),
        # The stand-in's embeddings are hashed bags of words: fast, deterministic, lexical.
        "embeddings": EngineSettings(impl="engines.embeddings:OpenAIEmbeddingEngine", device="remote", max_batch=16,
                                     options={"base_url": f"{stub.url}/v1", "model": "text-embedding-3-small",
                                              "dimensions": 64}),
    }


AppFactory = Callable[..., Awaitable[RunningApp]]


@pytest_asyncio.fixture(loop_scope="session")
async def app_factory(tmp_path: Path, database_url: str, openai_stub: OpenAIStub) -> AsyncIterator[AppFactory]:
    """Starts the real service on a free loopback port with this test's database, the test commands,
    and the OpenAI stand-in as its language model; `await app_factory(chat={...})` overrides settings.
    Calling it again after stopping the first app is a restart on the same data."""
    from tests.support.commands import TEST_ENGINES, register_test_commands

    running: list[RunningApp] = []

    async def make(*, real: tuple[str, ...] = (), engines: dict[str, EngineSettings] | None = None,
                   **overrides: Any) -> RunningApp:
        """`real` names engines that keep their configured (bundled) model instead of the stand-in;
        `engines` adds or replaces engines after the stand-ins are in place."""
        values: dict[str, Any] = {
            "server": {"port": 0},
            "limits": {"max_upload_mb": 1},
            "responder": {"stream_interval_s": 0.05, "progress_interval_s": 0.05},
        }
        values.update(overrides)
        settings = hermetic_settings(tmp_path, database_url, **values)
        settings.engines.update(TEST_ENGINES)
        settings.engines.update({k: v for k, v in stub_engines(openai_stub).items() if k not in real})
        settings.engines.update(engines or {})
        app = await start(settings, register=[register_test_commands])
        running.append(app)
        return app

    yield make
    for app in running:
        await app.stop(drain_timeout=5)


@pytest_asyncio.fixture(loop_scope="session")
async def web_app(app_factory: AppFactory) -> RunningApp:
    """The service with default settings (see `app_factory`)."""
    return await app_factory()
