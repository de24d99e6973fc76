"""The web chat page in headless Chromium, against the real server (`web_app`).

Each test opens a fresh browser context, so each one is a new visitor whose first message gets
the first-contact greeting. The last tests replace the websocket with a scripted one (Playwright's
`route_web_socket`) to drive frames the core commands never send: edits, progress, files, drops.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.async_api import Page, WebSocketRoute, expect

from tests.browser.conftest import OpenChat

pytestmark = pytest.mark.browser


async def send(page: Page, text: str) -> None:
    composer = page.get_by_test_id("composer")
    await composer.fill(text)
    await composer.press("Enter")


async def eventually(check: Callable[[], Any], timeout_s: float = 10.0) -> None:
    """Wait until `check()` is truthy (for state recorded on the Python side)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def bot_message(page: Page, containing: str) -> Any:
    return page.get_by_test_id("bot-message").filter(has_text=containing)


async def test_help_lists_the_commands(open_chat: OpenChat) -> None:
    page = await open_chat()
    await send(page, "/help")

    await expect(page.get_by_test_id("user-message").last).to_have_text("/help")
    reply = bot_message(page, "/whoami").last
    await expect(reply).to_contain_text("/ping")
    await expect(reply.locator("code", has_text="/ping")).to_have_count(1)  # `code` rendered, not shown raw
    await expect(reply.locator("strong").first).to_have_text("Commands")
    await expect(page.get_by_test_id("composer")).to_have_value("")


async def test_autocomplete_shows_and_filters_commands(open_chat: OpenChat) -> None:
    page = await open_chat()
    composer = page.get_by_test_id("composer")
    popup = page.get_by_test_id("autocomplete")

    await composer.press_sequentially("/")
    await expect(popup).to_be_visible()
    await expect(popup.locator("[data-name='help']")).to_contain_text("/help")
    await expect(popup.locator("[data-name='help']")).to_contain_text("Show what I can do")

    await composer.press_sequentially("pi")
    await expect(popup.get_by_role("option").first).to_have_attribute("data-name", "ping")
    await expect(popup.locator("[data-name='help']")).to_have_count(0)
    await composer.press("Tab")
    await expect(composer).to_have_value("/ping ")
    await expect(popup).to_be_hidden()

    await composer.fill("")
    await composer.press_sequentially("/wh")
    await popup.locator("[data-name='whoami']").click()
    await expect(composer).to_have_value("/whoami ")
    await expect(composer).to_be_focused()

    await composer.fill("")
    await composer.press_sequentially("/")
    await expect(popup).to_be_visible()
    first = popup.get_by_role("option").nth(0)
    second = popup.get_by_role("option").nth(1)
    await composer.press("ArrowDown")
    await expect(second).to_have_attribute("aria-selected", "true")
    await expect(first).to_have_attribute("aria-selected", "false")
    await composer.press("Escape")
    await expect(popup).to_be_hidden()


async def test_uploaded_document_joins_the_knowledge_base(open_chat: OpenChat) -> None:
    page = await open_chat()
    await page.get_by_test_id("file-input").set_input_files(
        files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"Meeting notes: ship on Friday.\n"}]
    )
    chip = page.get_by_test_id("pending-attachment")
    await expect(chip).to_contain_text("notes.txt")
    await expect(chip).to_have_attribute("data-status", "ready")

    await page.get_by_test_id("send").click()  # no text: the file alone is a message
    await expect(page.get_by_test_id("user-message").last.get_by_test_id("sent-attachment")).to_contain_text(
        "notes.txt")
    await expect(bot_message(page, "notes.txt")).to_contain_text("Added to the knowledge base")
    await expect(chip).to_have_count(0)


async def test_unknown_command_suggests_the_closest(open_chat: OpenChat) -> None:
    page = await open_chat()
    await send(page, "/hepl")
    error = page.get_by_test_id("error-message")
    await expect(error).to_contain_text("Did you mean /help")
    await expect(error).to_have_attribute("role", "alert")


async def test_rejected_uploads_show_an_error(open_chat: OpenChat) -> None:
    page = await open_chat()
    file_input = page.get_by_test_id("file-input")
    error = page.get_by_test_id("error-message")

    # The server checks content against the name: this "picture" is plain text.
    await file_input.set_input_files(
        files=[{"name": "photo.png", "mimeType": "image/png", "buffer": b"not a picture, just text\n"}]
    )
    await expect(error).to_have_count(1)
    await expect(error).to_contain_text("photo.png says .png")  # the server's own reason
    await expect(page.get_by_test_id("pending-attachment")).to_have_count(0)

    # Over the limit from the welcome frame: refused before uploading.
    limit = await page.evaluate("window.TeamBotChat.limits.max_upload_bytes")
    assert isinstance(limit, int) and limit > 0
    await page.evaluate(
        """(size) => {
            const input = document.querySelector("[data-testid=file-input]");
            const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(size)], "huge.bin"));
            input.files = dt.files;
            input.dispatchEvent(new Event("change", {bubbles: true}));
        }""",
        limit + 1,
    )
    await expect(error).to_have_count(2)
    await expect(error.last).to_contain_text("huge.bin")
    await expect(page.get_by_test_id("pending-attachment")).to_have_count(0)


async def test_greeting_suggestions_run_when_clicked(open_chat: OpenChat) -> None:
    page = await open_chat()
    await send(page, "hello")

    greeting = page.get_by_test_id("bot-message").first
    await expect(greeting.get_by_role("button")).not_to_have_count(0)
    ping = greeting.locator("button[data-value='/ping']")
    await expect(ping).to_be_visible()
    await ping.click()
    await expect(bot_message(page, "Pong")).to_have_count(1)


async def test_streamed_reply_is_edited_in_place(open_chat: OpenChat) -> None:
    frames: list[dict[str, Any]] = []

    def record(ws: WebSocketRoute) -> None:  # pass-through that notes what the server sends
        server = ws.connect_to_server()
        server.on_message(lambda message: (frames.append(json.loads(message)), ws.send(message)))

    page = await open_chat(route_ws=record)
    await send(page, "/stream 40")
    reply = bot_message(page, "w0 ")
    await expect(reply).to_contain_text("w39")
    await expect(reply).to_have_count(1)
    assert any(f["type"] == "edit" for f in frames), [f["type"] for f in frames]


async def test_chinese_locale(open_chat: OpenChat) -> None:
    page = await open_chat("zh-CN")
    await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    await expect(page.get_by_test_id("send")).to_have_attribute("aria-label", "发送")
    await expect(page.get_by_test_id("composer")).to_have_attribute("placeholder", re.compile("命令"))

    await send(page, "/help")
    await expect(bot_message(page, "/whoami").last).to_contain_text("命令")


async def test_server_text_is_never_html(open_chat: OpenChat) -> None:
    page = await open_chat()
    await send(page, "/help <img src=x onerror=window.__pwned=1>")
    error = page.get_by_test_id("error-message")
    await expect(error).to_contain_text("<img src=x")
    await expect(page.get_by_test_id("messages").locator("img")).to_have_count(0)
    assert await page.evaluate("window.__pwned === undefined")


# -- scripted websocket: frames the core commands do not send -------------------------------------
COMMANDS = [
    {"name": "help", "description": "Show what I can do", "usage": "/help [command]", "role": "user",
     "options": [{"name": "command", "type": "text", "required": False, "description": "A command",
                  "choices": []}]},
    {"name": "ping", "description": "Check that I'm alive", "usage": "/ping", "role": "user", "options": []},
]


class ScriptedServer:
    """Stands in for /ws: answers `hello` with `welcome` (unless held) and records client frames."""

    def __init__(self) -> None:
        self.routes: list[WebSocketRoute] = []
        self.frames: list[dict[str, Any]] = []
        self.hold_welcome = False

    def __call__(self, ws: WebSocketRoute) -> None:
        self.routes.append(ws)
        ws.on_message(lambda message: self._received(ws, message))

    def _received(self, ws: WebSocketRoute, message: str | bytes) -> None:
        frame = json.loads(message)
        self.frames.append(frame)
        if frame["type"] == "hello" and not self.hold_welcome:
            self.welcome(ws, frame["visitor"])

    @staticmethod
    def welcome(ws: WebSocketRoute, visitor: str) -> None:
        ws.send(json.dumps({"type": "welcome", "locale": "en", "visitor": visitor, "commands": COMMANDS,
                            "limits": {"max_upload_bytes": 1000}}))

    def send(self, **frame: Any) -> None:
        self.routes[-1].send(json.dumps(frame))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == kind]


async def test_edits_progress_files_and_buttons(open_chat: OpenChat) -> None:
    server = ScriptedServer()
    page = await open_chat(route_ws=server)
    hello = server.of_type("hello")[0]
    assert hello["locale"] == "en-US" and re.fullmatch(r"[\w-]{1,64}", hello["visitor"])

    # a streamed message: one bubble, edited in place; markdown-lite applied, HTML shown as text
    server.send(type="message", id="m1", text="Thinking", buttons=[], reply_to="")
    server.send(type="edit", id="m1", text="Final *answer*: `x < y` and <b>tags</b>\n```python\nx = 1\n```",
                buttons=[{"label": "Regenerate", "action_id": "regen", "value": "42", "style": ""}])
    reply = bot_message(page, "Final")
    await expect(reply).to_have_count(1)
    await expect(page.get_by_test_id("bot-message")).to_have_count(1)
    await expect(reply.locator("strong")).to_have_text("answer")
    await expect(reply.locator("pre code")).to_have_text("x = 1")
    await expect(reply).to_contain_text("<b>tags</b>")
    await reply.get_by_role("button", name="Regenerate").click()
    await eventually(lambda: server.of_type("action"))
    action = server.of_type("action")[0]
    assert (action["action_id"], action["value"]) == ("regen", "42")
    assert re.fullmatch(r"[\w-]{1,64}", action["id"])

    # progress: one bar, updated in place, marked done at 1.0
    server.send(type="progress", id="p1", fraction=0.4, note="rendering", reply_to="")
    bar = page.get_by_test_id("progress")
    await expect(bar).to_contain_text("40%")
    await expect(bar).to_contain_text("rendering")
    await expect(bar.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "40")
    # an image job's preview shows inside the same bar (a data URL); other URLs are ignored
    tiny_png = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx"
                "0gAAAABJRU5ErkJggg==")
    server.send(type="progress", id="p1", fraction=0.6, note="step 6/10", reply_to="", preview=tiny_png)
    preview = bar.locator("img.progress-preview")
    await expect(preview).to_have_attribute("src", tiny_png)
    await expect(preview).to_have_attribute("alt", "step 6/10")
    server.send(type="progress", id="p1", fraction=0.7, note="step 7/10", reply_to="",
                preview="https://elsewhere.example/x.png")
    await expect(bar).to_contain_text("70%")
    await expect(preview).to_have_attribute("src", tiny_png)
    server.send(type="progress", id="p1", fraction=1.0, note="rendering", reply_to="")
    await expect(bar).to_have_attribute("data-done", "true")
    await expect(bar).to_have_count(1)

    # files by mime type, with caption and buttons
    server.send(type="file", id="f1", name="fox.png", mime="image/png", url="/files/0/fox.png",
                caption="A _red_ fox", buttons=[{"label": "Upscale", "action_id": "up", "value": "1"}])
    others = {"hello.mp3": "audio/mpeg", "clip.mp4": "video/mp4", "report.pdf": "application/pdf"}
    for name, mime in others.items():
        server.send(type="file", id=name, name=name, mime=mime, url=f"/files/0/{name}", caption="")
    messages = page.get_by_test_id("messages")
    await expect(messages.locator("img[alt='fox.png']")).to_have_attribute("src", "/files/0/fox.png")
    await expect(bot_message(page, "red fox").locator("em")).to_have_text("red")
    await expect(bot_message(page, "red fox").get_by_role("button", name="Upscale")).to_be_visible()
    await expect(messages.locator("audio[controls]")).to_have_attribute("src", "/files/0/hello.mp3")
    await expect(messages.locator("video[controls]")).to_have_attribute("src", "/files/0/clip.mp4")
    download = messages.locator("a[download='report.pdf']")
    await expect(download).to_have_attribute("href", "/files/0/report.pdf")

    # error frames; unsafe links are not links
    server.send(type="error", text="Something *failed*", reply_to="")
    await expect(page.get_by_test_id("error-message")).to_have_attribute("role", "alert")
    server.send(type="message", id="m2", text="[click](javascript:alert(1)) <img src=x onerror=alert(1)>",
                buttons=[])
    await expect(bot_message(page, "click")).to_contain_text("<img src=x")
    await expect(messages.locator("a[href^='javascript']")).to_have_count(0)


async def test_reconnects_and_sends_what_was_typed_meanwhile(open_chat: OpenChat) -> None:
    server = ScriptedServer()
    page = await open_chat(route_ws=server)
    html = page.locator("html")
    visitor = server.of_type("hello")[0]["visitor"]

    server.hold_welcome = True
    await server.routes[0].close(code=1012)
    await expect(html).to_have_attribute("data-connection", re.compile("reconnecting|connecting"))
    await expect(page.locator("#banner")).to_be_visible()
    await eventually(lambda: len(server.of_type("hello")) == 2)  # reconnected, not yet welcomed

    await send(page, "are you there?")
    sent = page.get_by_test_id("user-message").last
    await expect(sent).to_have_class(re.compile("queued"))
    assert not server.of_type("message")

    ScriptedServer.welcome(server.routes[-1], visitor)
    await expect(html).to_have_attribute("data-connection", "online")
    await expect(sent).not_to_have_class(re.compile("queued"))
    await eventually(lambda: server.of_type("message"))
    assert [f["text"] for f in server.of_type("message")] == ["are you there?"]
    assert server.of_type("hello")[1]["visitor"] == visitor

    # the visitor id survives a reload
    server.hold_welcome = False
    await page.reload()
    await expect(html).to_have_attribute("data-connection", "online")
    assert server.of_type("hello")[-1]["visitor"] == visitor


async def test_phone_width_layout(open_chat: OpenChat) -> None:
    server = ScriptedServer()
    page = await open_chat(viewport={"width": 375, "height": 700}, route_ws=server)
    server.send(type="message", id="m1", text="A long line " * 30 + "https://example.com/" + "x" * 120,
                buttons=[{"label": "One", "action_id": "a", "value": "1"}])
    await expect(page.get_by_test_id("bot-message")).to_have_count(1)
    for testid in ("composer", "send"):
        await expect(page.get_by_test_id(testid)).to_be_in_viewport()
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    await page.get_by_test_id("composer").fill("hi")
    await page.keyboard.press("Tab")  # keyboard focus lands on Send, with a visible outline
    await expect(page.get_by_test_id("send")).to_be_focused()
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
