"""Headless Chromium for the web page tests.

The browser is Debian's Chromium at /usr/bin/chromium (never `playwright install`), driven by the
async Playwright API. The server under test is the `web_app` fixture from tests/conftest.py.

- `browser`: one Chromium for the session.
- `open_chat(locale="en-US", *, viewport=None, route_ws=None)`: a fresh browser context (so a fresh
  visitor id) with the chat page loaded and, unless `route_ws` replaces the server, connected.
  JavaScript errors on any page fail the test.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

CHROMIUM = Path(os.environ.get("BOT_TEST_CHROMIUM", "/usr/bin/chromium"))
HAVE_CHROMIUM = CHROMIUM.exists()
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000

OpenChat = Callable[..., Awaitable[Any]]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    if not HAVE_CHROMIUM:
        pytest.skip(f"browser tests need Chromium at {CHROMIUM}")
    playwright = pytest.importorskip("playwright.async_api")
    playwright.expect.set_options(timeout=TIMEOUT_MS)
    async with playwright.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture(loop_scope="session")
async def open_chat(browser: Any, web_app: Any) -> AsyncIterator[OpenChat]:
    from playwright.async_api import expect

    contexts: list[Any] = []
    errors: list[str] = []
    base = str(web_app.url).rstrip("/")

    async def open_(locale: str = "en-US", *, viewport: dict[str, int] | None = None,
                    route_ws: Callable[[Any], Any] | None = None) -> Any:
        size = viewport or {"width": 1000, "height": 760}
        context = await browser.new_context(locale=locale, viewport=size)
        contexts.append(context)
        page = await context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda e: errors.append(str(e)))
        if route_ws is not None:
            await page.route_web_socket("**/ws", route_ws)
        await page.goto(base + "/")
        await expect(page.locator("html")).to_have_attribute("data-connection", "online")
        return page

    yield open_
    for context in contexts:
        await context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
