"""Slack scenarios: the real Bolt app behind the service, signed HTTP requests and Socket Mode,
against a loopback Slack Web API that records every call."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
import wave
from typing import Any

import aiohttp
import pytest

from bot.app import RunningApp
from tests.conftest import AppFactory
from tests.integration.conftest import SECRET
from tests.support.openai_stub import OpenAIStub, Reply
from tests.support.slack_stub import (
    SlackStub,
    app_mention,
    event_callback,
    form_body,
    interactive_body,
    message_event,
    sign,
)
from tests.unit.test_filecheck import png_bytes


def wav_bytes(seconds: float = 0.2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x01\x00" * int(8000 * seconds))
    return buf.getvalue()


async def post(app: RunningApp, body: bytes, *, content_type: str = "application/json", secret: str = SECRET,
               timestamp: int | None = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    signed = sign(body, secret, timestamp)
    async with aiohttp.ClientSession() as http, http.post(
        f"{app.url}/slack/events", data=body,
        headers={"Content-Type": content_type, **signed, **(headers or {})},
    ) as resp:
        return resp.status, await resp.text()


async def deliver(app: RunningApp, event: dict[str, Any], **kwargs: Any) -> tuple[int, str]:
    return await post(app, json.dumps(event).encode(), **kwargs)


def bot_posts(stub: SlackStub, channel: str) -> list[dict[str, Any]]:
    return [m for m in stub.messages[channel] if m.get("user") == "UBOT" or m.get("bot_id")]


async def test_signature_checks_and_url_verification(slack_app: RunningApp) -> None:
    challenge = json.dumps({"type": "url_verification", "challenge": "abc123", "token": "x"}).encode()
    status, text = await post(slack_app, challenge)
    assert status == 200 and "abc123" in text
    status, _ = await post(slack_app, challenge, secret="wrong-secret")
    assert status == 401
    status, _ = await post(slack_app, challenge, timestamp=int(time.time()) - 600)
    assert status == 401
    status, _ = await post(slack_app, b"{not json", content_type="application/json")
    assert status in (400, 401, 404)
    async with aiohttp.ClientSession() as http, http.get(f"{slack_app.url}/healthz") as resp:
        assert resp.status == 200  # still serving


async def test_dm_hello_gets_one_threaded_streamed_reply(
    slack_app: RunningApp, slack_stub: SlackStub, openai_stub: OpenAIStub
) -> None:
    openai_stub.script(Reply(text="Hello there! " * 30, chunk_delay_s=0.01))
    event = message_event("hello", channel="D1", user="U1")
    status, _ = await deliver(slack_app, event_callback(event))
    assert status == 200
    await slack_stub.wait_for_call("chat.update", count=2)
    for _ in range(100):
        replies = [m for m in bot_posts(slack_stub, "D1") if "Hello there" in m.get("text", "")]
        if replies and any(b.get("type") == "actions" for b in replies[0].get("blocks", [])):
            break
        await asyncio.sleep(0.05)
    assert len(replies) == 1
    reply = replies[0]
    assert reply["thread_ts"] == event["ts"]
    assert reply["text"].strip() == ("Hello there! " * 30).strip()
    assert len(slack_stub.edit_history("D1", reply["ts"])) >= 1  # streamed by edits
    buttons = [e["value"] for b in reply["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert any(v.startswith("up:") for v in buttons)


async def test_help_slash_command_answers_in_channel(slack_app: RunningApp, slack_stub: SlackStub) -> None:
    status, _ = await post(slack_app, form_body(slack_stub.slash_command("/help", "")),
                           content_type="application/x-www-form-urlencoded")
    assert status == 200
    message = await slack_stub.wait_for_message("C1", where=lambda m: "/whoami" in m.get("text", ""))
    assert "/ping" in message["text"]


async def test_unknown_slash_command_gets_an_ephemeral_error(slack_app: RunningApp, slack_stub: SlackStub) -> None:
    await post(slack_app, form_body(slack_stub.slash_command("/hepl", "")),
               content_type="application/x-www-form-urlencoded")
    await slack_stub.wait_for_call("chat.postEphemeral")
    ephemeral = slack_stub.calls_to("chat.postEphemeral")[-1].params
    assert ephemeral["user"] == "U1" and "/help" in ephemeral["text"]


async def test_retried_delivery_is_answered_once(slack_app: RunningApp, slack_stub: SlackStub) -> None:
    body = event_callback(app_mention("<@UBOT> /whoami", channel="C2"), event_id="EvRETRY1")
    for attempt in range(4):
        headers = {"X-Slack-Retry-Num": str(attempt), "X-Slack-Retry-Reason": "http_timeout"} if attempt else {}
        status, _ = await deliver(slack_app, body, headers=headers)
        assert status == 200
    await slack_stub.wait_for_message("C2", where=lambda m: "You are" in m.get("text", ""))
    await asyncio.sleep(0.5)
    assert len([m for m in bot_posts(slack_stub, "C2") if "You are" in m.get("text", "")]) == 1


async def test_mention_with_audio_and_image_reach_their_handlers_with_the_bytes(
    slack_app: RunningApp, slack_stub: SlackStub
) -> None:
    audio = wav_bytes()
    image = png_bytes()
    for name, data, mime in (("clip.wav", audio, "audio/wav"), ("photo.png", image, "image/png")):
        file = slack_stub.add_file(name, data, mime)
        event = app_mention("<@UBOT> here", channel="C1", files=[file])
        await deliver(slack_app, event_callback(event))
        reply = await slack_stub.wait_for_message("C1", where=lambda m, n=name: n in m.get("text", ""))
        # audio (voice_mode off) is kept and described; an image is kept and indexed for /find
        assert ("Received" in reply["text"] and mime in reply["text"]) if mime.startswith("audio") else \
            "Saved photo.png" in reply["text"]
        blob = await slack_app.services.store.blobs.by_sha(hashlib.sha256(data).hexdigest())
        assert blob is not None and blob.name == name and blob.mime == mime


async def test_forbidden_and_oversized_files_get_a_clear_reply(slack_app: RunningApp, slack_stub: SlackStub) -> None:
    locked = slack_stub.add_file("secret.txt", b"classified", "text/plain", forbidden=True)
    await deliver(slack_app, event_callback(app_mention("<@UBOT> read", channel="C1", files=[locked])))
    await slack_stub.wait_for_call("chat.postMessage")
    reply = await slack_stub.wait_for_message("C1", where=lambda m: "secret.txt" in m.get("text", ""))
    assert "couldn't download" in reply["text"] and "403" in reply["text"]
    big = slack_stub.add_file("big.txt", b"x" * (2 * 2**20), "text/plain")
    await deliver(slack_app, event_callback(app_mention("<@UBOT> read", channel="C1", files=[big])))
    reply = await slack_stub.wait_for_message("C1", where=lambda m: "big.txt" in m.get("text", ""))
    assert "larger than" in reply["text"]


async def test_long_answer_arrives_as_several_messages_with_fences_intact(
    slack_app: RunningApp, slack_stub: SlackStub, openai_stub: OpenAIStub
) -> None:
    code = "```python\n" + "\n".join(f"print('line {i} of the program')" for i in range(120)) + "\n```"
    answer = "\n\n".join(["Intro paragraph. " * 40, code, "Middle part. " * 60, code, "The end."])
    assert len(answer) > 9000
    openai_stub.script(Reply(text=answer))
    event = app_mention("<@UBOT> write a long program", channel="C3")
    slack_stub.add_channel("C3", "long") if "C3" not in slack_stub.channels else None
    await deliver(slack_app, event_callback(event))
    for _ in range(200):
        posts = [m for m in bot_posts(slack_stub, "C3") if m.get("thread_ts") == event["ts"]]
        if posts and "The end." in posts[-1].get("text", ""):
            break
        await asyncio.sleep(0.05)
    assert len(posts) >= 4
    for message in posts:
        assert len(message["text"]) <= 3000
        assert sum(1 for line in message["text"].split("\n") if line.startswith("```")) % 2 == 0
    lines = [ln for m in posts for ln in m["text"].split("\n") if "of the program" in ln]
    assert len(lines) == 240


async def test_chat_update_429_is_retried_after_retry_after(
    slack_app: RunningApp, slack_stub: SlackStub, openai_stub: OpenAIStub
) -> None:
    openai_stub.script(Reply(text="word " * 200, chunk_delay_s=0.005))
    slack_stub.fail_next("chat.update", status=429, retry_after=1)
    event = app_mention("<@UBOT> talk", channel="C2")
    await deliver(slack_app, event_callback(event))
    for _ in range(200):
        updates = slack_stub.calls_to("chat.update")
        if any(c.status == 429 for c in updates) and any(c.status == 200 for c in updates):
            break
        await asyncio.sleep(0.05)
    limited = next(c for c in updates if c.status == 429)
    after = [c for c in updates if c.at > limited.at]
    assert after and after[0].at - limited.at >= 1.0  # waited out Retry-After


async def test_button_click_routes_to_the_handler(slack_app: RunningApp, slack_stub: SlackStub) -> None:
    payload = slack_stub.block_action("suggest:0", "/ping", channel="C1")
    status, _ = await post(slack_app, interactive_body(payload), content_type="application/x-www-form-urlencoded")
    assert status == 200
    await slack_stub.wait_for_message("C1", where=lambda m: "Pong" in m.get("text", ""))


async def test_own_messages_and_edits_are_ignored(slack_app: RunningApp, slack_stub: SlackStub) -> None:
    own = message_event("I said this", channel="D1", user="UBOT", bot_id="BBOT")
    edited = message_event("edited", channel="D1", subtype="message_changed")
    before = len(slack_stub.calls_to("chat.postMessage"))
    for event in (own, edited):
        status, _ = await deliver(slack_app, event_callback(event))
        assert status == 200
    await asyncio.sleep(0.5)
    assert len(slack_stub.calls_to("chat.postMessage")) == before


async def test_socket_mode(app_factory: AppFactory, slack_stub: SlackStub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test-token")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-test-token")
    await app_factory(slack={"api_url": slack_stub.url, "min_post_interval_s": 0.0})
    socket = slack_stub.socket
    await asyncio.wait_for(socket.connected.wait(), 10)
    event = event_callback(app_mention("<@UBOT> /whoami", channel="C2"), event_id="EvSOCK1")
    envelope = await socket.send_envelope("events_api", event)
    await socket.wait_ack(envelope)
    await socket.send_envelope("events_api", event, retry_attempt=1, retry_reason="timeout")  # a retry
    await slack_stub.wait_for_message("C2", where=lambda m: "You are" in m.get("text", ""))
    command = await socket.send_envelope("slash_commands", slack_stub.slash_command("/ping", "", channel="C1"))
    ack = await socket.wait_ack(command)
    assert ack["received_at_monotonic"] > 0
    await slack_stub.wait_for_message("C1", where=lambda m: "Pong" in m.get("text", ""))
    await asyncio.sleep(0.3)
    assert len([m for m in bot_posts(slack_stub, "C2") if "You are" in m.get("text", "")]) == 1


async def test_manifest_lists_every_command(slack_app: RunningApp) -> None:
    from bot.adapters.slack_manifest import manifest

    generated = manifest(slack_app.services.router, slack_app.services.settings, socket_mode=False)
    commands = {c["command"] for c in generated["features"]["slash_commands"]}
    assert commands == {f"/{name}" for name in slack_app.services.router.commands}
    assert all(c["url"].endswith("/slack/events") for c in generated["features"]["slash_commands"])
    assert "chat:write" in generated["oauth_config"]["scopes"]["bot"]
    assert generated["settings"]["socket_mode_enabled"] is False


async def test_oauth_install_flow_stores_a_sealed_installation(
    app_factory: AppFactory, slack_stub: SlackStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    monkeypatch.setenv("SLACK_CLIENT_SECRET", "client-secret-for-tests")
    app = await app_factory(slack={"api_url": slack_stub.url, "min_post_interval_s": 0.0, "client_id": "111.222"})
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.get(f"{app.url}/slack/install", allow_redirects=False) as resp:
            page = await resp.text()
            location = resp.headers.get("Location", "")
            # the browser-binding cookie is Secure (https only); a browser behind TLS sends it back
            cookie = "; ".join(f"{k}={v.value}" for k, v in resp.cookies.items())
        target = location or page
        assert "state=" in target, (resp.status, target[:500])
        state = target.split("state=", 1)[1].split("&", 1)[0].split('"', 1)[0]
        assert "client_id=111.222" in target and "chat:write" in target.replace("%3A", ":")
        code = slack_stub.issue_oauth_code(team_id="T9", team_name="Ninth")
        redirect = f"{app.url}/slack/oauth_redirect"
        async with http.get(redirect, params={"code": code, "state": state}, headers={"Cookie": cookie}) as resp:
            assert resp.status == 200, await resp.text()
        async with http.get(redirect, params={"code": code, "state": state}, headers={"Cookie": cookie}) as resp:
            assert resp.status != 200  # a state works once
    assert slack_stub.installs and slack_stub.installs[-1]["team"]["id"] == "T9"
    sealed = await app.services.store.installations.find("slack", None, "T9")
    assert sealed is not None and "xoxb-" not in sealed and "client-secret" not in sealed

    # an event from the new workspace is answered with that workspace's own token
    await deliver(app, event_callback(app_mention("<@UBOT> /whoami", channel="C1", team="T9"), team="T9"))
    reply = await slack_stub.wait_for_message("C1", where=lambda m: "T9" in m.get("text", ""))
    assert "You are" in reply["text"]
    posted = [c for c in slack_stub.calls_to("chat.postMessage") if "T9" in str(c.params.get("text"))]
    assert posted and posted[-1].token == "xoxb-"


async def test_thread_replies_are_answered_only_where_the_bot_takes_part(
    slack_app: RunningApp, slack_stub: SlackStub
) -> None:
    ours = slack_stub.add_message("C2", "a question from before")
    slack_stub.add_message("C2", "an earlier answer", user="UBOT", bot_id="BBOT", thread_ts=ours["ts"])
    theirs = slack_stub.add_message("C2", "people talking")
    await deliver(slack_app, event_callback(message_event("/whoami", channel="C2", thread_ts=theirs["ts"])))
    await deliver(slack_app, event_callback(message_event("/whoami", channel="C2", thread_ts=ours["ts"])))
    reply = await slack_stub.wait_for_message("C2", where=lambda m: "You are" in m.get("text", "")
                                              and m.get("thread_ts") == ours["ts"])
    assert reply["thread_ts"] == ours["ts"]
    await asyncio.sleep(0.3)
    assert not [m for m in bot_posts(slack_stub, "C2") if m.get("thread_ts") == theirs["ts"]]
    assert {c.params.get("ts") for c in slack_stub.calls_to("conversations.replies")} >= {ours["ts"], theirs["ts"]}


async def test_uploads_use_files_v2(slack_app: RunningApp, slack_stub: SlackStub) -> None:
    await post(slack_app, form_body(slack_stub.slash_command("/usage", "", channel="C1")),
               content_type="application/x-www-form-urlencoded")
    await slack_stub.wait_for_call("files.completeUploadExternal")
    assert slack_stub.calls_to("files.getUploadURLExternal")
    uploaded = [f for f in slack_stub.files.values() if f.name == "usage.png"]
    assert uploaded and uploaded[0].content.startswith(b"\x89PNG") and uploaded[0].channel_id == "C1"
    assert slack_stub.calls_to("users.info")  # the user's locale was looked up
    assert slack_stub.calls_to("auth.test")


async def test_file_whose_content_lies_about_its_type(slack_app: RunningApp, slack_stub: SlackStub) -> None:
    fake = slack_stub.add_file("song.mp3", b"just some words, not audio", "audio/mpeg")
    await deliver(slack_app, event_callback(app_mention("<@UBOT> listen", channel="C1", files=[fake])))
    reply = await slack_stub.wait_for_message("C1", where=lambda m: "song.mp3" in m.get("text", ""))
    assert ".mp3" in reply["text"] and "real file" in reply["text"]
