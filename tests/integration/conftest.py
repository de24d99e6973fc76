"""Fixtures shared by the platform scenarios."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from bot.app import RunningApp
from tests.conftest import AppFactory
from tests.support.slack_stub import SlackStub

SECRET = "test-signing-secret"


@pytest_asyncio.fixture(loop_scope="session")
async def slack_stub() -> AsyncIterator[SlackStub]:
    async with SlackStub() as stub:
        yield stub


@pytest_asyncio.fixture(loop_scope="session")
async def slack_app(app_factory: AppFactory, slack_stub: SlackStub, monkeypatch: pytest.MonkeyPatch) -> RunningApp:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test-token")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    # voice_mode "off": voice clips go to the file handler, which echoes what arrived (no model here)
    return await app_factory(slack={"api_url": slack_stub.url, "min_post_interval_s": 0.0},
                             rate_limit={"per_user_per_minute": 600, "burst": 100}, speech={"voice_mode": "off"})
