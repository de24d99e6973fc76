"""Scenarios through the real web adapter: websocket in, middleware, handlers, pool, PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp

from bot.app import RunningApp
from tests.support.web_client import Visitor


async def test_first_contact_greets_with_suggestion_buttons_that_run(web_app: RunningApp) -> None:
    async with Visitor(web_app.url) as v:
        assert {"help", "ping", "whoami", "reset"} <= {c["name"] for c in v.welcome["commands"]}
        mid = await v.send("hello there")
        greeting = await v.reply(mid, contains="Hi")
        labels = {b["value"] for b in greeting["buttons"]}
        assert {"/help", "/ping", "/whoami"} <= labels
        await v.wait_for(lambda f: "echo: hello there" in f.get("text", ""))  # then the chat answer
        click = await v.click("suggest", "/ping")
        pong = await v.reply(click, contains="Pong")
        assert "ms" in pong["text"]
        # a second message is not greeted again
        again = await v.send("still there?")
        await v.wait_for(lambda f: "echo: still there?" in f.get("text", ""))
        assert not any("Hi" in f.get("text", "") for f in v.replies(again))


async def test_help_lists_commands_and_explains_one(web_app: RunningApp) -> None:
    async with Visitor(web_app.url) as v:
        mid = await v.send("/help")
        listing = await v.reply(mid, contains="/whoami")
        assert "/ping" in listing["text"] and "/reset" in listing["text"]
        mid = await v.send("/help typed")
        detail = await v.reply(mid, contains="count")
        assert "whole number" in detail["text"]


async def test_chinese_locale_answers_in_chinese(web_app: RunningApp) -> None:
    async with Visitor(web_app.url, locale="zh-CN") as v:
        mid = await v.send("/help")
        listing = await v.reply(mid, contains="命令")
        assert "/ping" in listing["text"]
        mid = await v.send("/nope")
        error = await v.reply(mid, kind="error")
        assert "未知命令" in error["text"]


async def test_unknown_command_suggests_the_closest(web_app: RunningApp) -> None:
    async with Visitor(web_app.url) as v:
        mid = await v.send("/hepl")
        error = await v.reply(mid, kind="error")
        assert "Unknown command /hepl" in error["text"] and "/help" in error["text"]


async def test_missing_and_wrong_typed_options(web_app: RunningApp) -> None:
    async with Visitor(web_app.url) as v:
        mid = await v.send("/typed")
        assert "needs count" in (await v.reply(mid, kind="error"))["text"]
        mid = await v.send("/typed count:lots")
        assert "whole number" in (await v.reply(mid, kind="error"))["text"]
        mid = await v.send("/typed count:99")
        assert "between 1" in (await v.reply(mid, kind="error"))["text"]
        mid = await v.send("/typed count:2 --loud ho")
        assert (await v.reply(mid, contains="HO"))["text"] == "HO HO"


async def test_repeated_event_id_is_answered_once(web_app: RunningApp) -> None:
    async with Visitor(web_app.url) as v:
        await v.send("/whoami", id="dup-1")
        await v.send("/whoami", id="dup-1")
        await v.reply("dup-1", contains="You are")
        marker = await v.send("/ping")
        await v.reply(marker, contains="Pong")  # everything before it has been handled
        assert len([f for f in v.replies("dup-1") if "You are" in f.get("text", "")]) == 1


async def test_rate_limit_answers_politely(web_app: RunningApp) -> None:
    async with Visitor(web_app.url) as v:
        ids = [await v.send("/whoami") for _ in range(14)]  # burst is 10
        error = await v.wait_for(lambda f: f.get("type") == "error" and "quickly" in f.get("text", ""))
        assert error["reply_to"] in ids and "try again" in error["text"]


async def test_malformed_frames_get_a_message_and_the_server_keeps_going(web_app: RunningApp) -> None:
    async with Visitor(web_app.url) as v:
        for bad in ["{not json", '{"type": "dance"}', "[1, 2]", b"\x00\x01binary",
                    '{"type": "message", "text": 42}', '{"type": "message", "attachments": "x"}',
                    '{"type": "action"}']:
            before = len([f for f in v.frames if f["type"] == "error"])
            await v.send_raw(bad)
            await v.wait_for(lambda f, n=before: len([x for x in v.frames if x["type"] == "error"]) > n)
        errors = [f for f in v.frames if f["type"] == "error"]
        assert all("couldn't read" in f["text"] for f in errors)
        mid = await v.send("/ping")
        await v.reply(mid, contains="Pong")


async def test_uploads_checked_and_acknowledged(web_app: RunningApp) -> None:
    async with Visitor(web_app.url) as v:
        # Subtitles are kept, not read into the knowledge base (documents are: see test_docs.py).
        status, body = await v.upload("notes.srt", "1\n00:00:01,000 --> 00:00:02,000\n会议记录\n".encode())
        assert status == 200, body
        mid = await v.send("", attachments=[body["id"]])
        ack = await v.reply(mid, contains="notes.srt")
        assert "Received" in ack["text"] and "text/plain" in ack["text"]

        status, body = await v.upload("big.txt", b"a" * (2**20 + 10))
        assert status == 413 and "1.0 MB" in body["error"]
        status, body = await v.upload("empty.txt", b"")
        assert status == 400 and "empty" in body["error"]
        status, body = await v.upload("photo.png", b"this is not an image at all")
        assert status == 415 and "photo.png" in body["error"] and ".png" in body["error"]
        mid = await v.send("look", attachments=["999999"])
        assert "not found" in (await v.reply(mid, kind="error"))["text"]


async def test_upload_errors_speak_chinese(web_app: RunningApp) -> None:
    async with Visitor(web_app.url, locale="zh-CN") as v:
        status, body = await v.upload("empty.txt", b"")
        assert status == 400 and "空文件" in body["error"]


async def test_streamed_reply_edits_one_message(web_app: RunningApp) -> None:
    async with Visitor(web_app.url) as v:
        mid = await v.send("/stream words:40")
        first = await v.reply(mid, contains="w0")
        await v.wait_for(lambda f: f.get("id") == first["id"] and "w39" in f.get("text", ""))
        edits = [f for f in v.frames if f["type"] == "edit" and f["id"] == first["id"]]
        posts = [f for f in v.replies(mid) if f["type"] == "message" and "w0" in f["text"]]
        assert len(posts) == 1 and edits


async def test_raising_engine_reports_while_another_job_completes(web_app: RunningApp) -> None:
    async with Visitor(web_app.url) as v:
        slow = await v.send("/sleep 1")
        crash = await v.send("/crash")
        error = await v.reply(crash, kind="error")
        assert "crash engine failed" in error["text"]
        assert "slept" in (await v.reply(slow, contains="slept"))["text"]


async def test_killed_worker_reports_while_another_job_completes_and_recovers(web_app: RunningApp) -> None:
    async with Visitor(web_app.url) as v:
        slow = await v.send("/sleep 1.5")
        die = await v.send("/die")
        error = await v.reply(die, kind="error", timeout=60)
        assert "suicide engine stopped" in error["text"]
        await v.reply(slow, contains="slept")
        again = await v.send("/die live")
        assert (await v.reply(again, timeout=60, contains="alive"))["text"] == "alive"


async def test_full_queue_answers_busy(web_app: RunningApp) -> None:
    # The sleep engine runs one job and queues two more; the rest are turned away.
    visitors = [Visitor(web_app.url) for _ in range(5)]
    for v in visitors:
        await v.__aenter__()
    try:
        ids = [await v.send("/sleep 1") for v in visitors]
        outcomes = await asyncio.gather(*[
            v.wait_for(lambda f, m=m: f.get("reply_to") == m and (f["type"] == "error" or "slept" in f.get("text", "")))
            for v, m in zip(visitors, ids, strict=True)
        ])
        busy = [o for o in outcomes if o["type"] == "error"]
        assert busy and all("busy" in o["text"] for o in busy)
        assert len(outcomes) - len(busy) >= 2
    finally:
        for v in visitors:
            await v.__aexit__(None, None, None)


async def test_healthz_and_metrics(web_app: RunningApp) -> None:
    async with Visitor(web_app.url) as v:
        mid = await v.send("/ping")
        await v.reply(mid, contains="Pong")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{web_app.url}/healthz") as resp:
            health = await resp.json()
            assert resp.status == 200 and health["database"]["status"] == "up"
            assert health["engines"]["noop"]["state"] == "ready"
        async with http.get(f"{web_app.url}/metrics") as resp:
            text = await resp.text()
            assert 'bot_events_total{kind="command",platform="web"}' in text
            assert "bot_handler_seconds_bucket" in text and "bot_job_seconds" in text
        async with http.get(f"{web_app.url}/") as resp:
            assert resp.status == 200 and "<html" in (await resp.text()).lower()


async def test_jobs_are_recorded(web_app: RunningApp) -> None:
    async with Visitor(web_app.url) as v:
        mid = await v.send("/ping")
        await v.reply(mid, contains="Pong")
    # Job rows are written beside the job, not in its path: poll briefly.
    for _ in range(50):
        jobs = await web_app.services.store.jobs.recent(limit=10, engine="noop")
        if any(j.event_id == mid and j.status == "ok" for j in jobs):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"no finished job row for {mid}: {jobs}")
    assert all(j.queue_s is not None and j.run_s is not None for j in jobs if j.event_id == mid)


async def test_shutdown_waits_for_in_flight_work(web_app: RunningApp) -> None:
    async with Visitor(web_app.url) as v:
        mid = await v.send("/sleep 1")
        await asyncio.sleep(0.3)
        await web_app.stop(drain_timeout=10)
        assert any("slept" in f.get("text", "") for f in v.replies(mid))


async def test_unique_ids_per_visitor_channel(web_app: RunningApp) -> None:
    visitor = uuid.uuid4().hex
    async with Visitor(web_app.url, visitor=visitor) as v:
        mid = await v.send("/whoami")
        text = (await v.reply(mid, contains="You are"))["text"]
        assert visitor in text
