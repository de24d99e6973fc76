"""The Slack stand-ins answer the real slack_sdk / slack_bolt clients the way Slack does."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from yarl import URL

from tests.support.slack_stub import (
    BOT_USER_ID,
    UPLOAD,
    SlackStub,
    app_mention,
    event_callback,
    form_body,
    message_event,
    sign,
)


@pytest_asyncio.fixture(loop_scope="session")
async def stub() -> AsyncIterator[SlackStub]:
    async with SlackStub(client_id="111.222", client_secret="shh") as server:
        yield server


def web(stub: SlackStub, token: str | None = "xoxb-test", **options: Any) -> AsyncWebClient:
    return AsyncWebClient(token=token, base_url=stub.url, **options)


async def test_auth_test_identifies_the_bot_and_sends_slacks_headers(stub: SlackStub) -> None:
    response = await web(stub).auth_test()
    assert response["user_id"] == "UBOT" and response["bot_id"] == "BBOT"
    assert response["team_id"] == "T1" and response["url"].startswith("https://")
    assert "chat:write" in response.headers["x-oauth-scopes"]
    assert response.headers["x-slack-req-id"]
    call = stub.calls_to("auth.test")[0]
    assert call.token == "xoxb-" and call.status == 200


async def test_messages_threads_edits_ephemerals_users_and_replies(stub: SlackStub) -> None:
    client = web(stub)
    parent = stub.add_message("C1", "question?", user="U1")
    posted = await client.chat_postMessage(channel="C1", text="thinking…", thread_ts=parent["ts"])
    assert posted["channel"] == "C1" and posted["message"]["thread_ts"] == parent["ts"]
    assert posted["message"]["bot_id"] == "BBOT"

    updated = await client.chat_update(channel="C1", ts=posted["ts"], text="the answer",
                                       blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "*the answer*"}}])
    assert updated["ts"] == posted["ts"] and updated["text"] == "the answer"
    stored = stub.messages["C1"][-1]
    assert stored["text"] == "the answer" and stored["blocks"][0]["type"] == "section" and "edited" in stored
    assert [old["text"] for old in stub.edit_history("C1", posted["ts"])] == ["thinking…"]

    ephemeral = await client.chat_postEphemeral(channel="C1", user="U2", text="only you", thread_ts=parent["ts"])
    assert ephemeral["message_ts"] and stub.ephemerals[0]["to_user"] == "U2"

    plain = await client.users_info(user="U2")
    assert plain["user"]["name"] == "bob" and "locale" not in plain["user"]
    localized = await client.users_info(user="U2", include_locale=True)
    assert localized["user"]["locale"] == "de-DE"

    replies = await client.conversations_replies(channel="C1", ts=parent["ts"])
    assert [m["text"] for m in replies["messages"]] == ["question?", "the answer"]
    assert replies["messages"][0]["reply_count"] == 1 and replies["has_more"] is False
    first = await client.conversations_replies(channel="C1", ts=parent["ts"], limit=1)
    assert first["has_more"] is True
    rest = await client.conversations_replies(channel="C1", ts=parent["ts"], limit=1,
                                              cursor=first["response_metadata"]["next_cursor"])
    assert [m["text"] for m in rest["messages"]] == ["the answer"] and rest["has_more"] is False

    info = await client.conversations_info(channel="C1", include_locale=True)
    assert info["channel"]["name"] == "general" and info["channel"]["locale"] == "en-US"

    await client.reactions_add(channel="C1", timestamp=parent["ts"], name="eyes")
    assert stub.messages["C1"][0]["reactions"] == [{"name": "eyes", "users": ["UBOT"], "count": 1}]
    await client.chat_delete(channel="C1", ts=posted["ts"])
    assert [m["ts"] for m in stub.messages["C1"]] == [parent["ts"]]
    with pytest.raises(SlackApiError) as caught:
        await client.chat_update(channel="C1", ts=parent["ts"], text="not mine")
    assert caught.value.response["error"] == "cant_update_message"


async def test_files_upload_v2_runs_the_three_steps_and_the_bytes_arrive(stub: SlackStub) -> None:
    client = web(stub)
    parent = stub.add_message("C1", "draw me a cat")
    result = await client.files_upload_v2(content=b"\x89PNG fake", filename="a.png", title="A cat",
                                          channel="C1", thread_ts=parent["ts"], initial_comment="here")
    assert [c.method for c in stub.calls] == ["files.getUploadURLExternal", UPLOAD, "files.completeUploadExternal"]
    assert stub.calls[0].params["length"] == str(len(b"\x89PNG fake"))
    assert stub.calls[1].files == {"a.png": b"\x89PNG fake"} and stub.calls[1].token is None
    stored = stub.files[result["file"]["id"]]
    assert stored.content == b"\x89PNG fake" and stored.title == "A cat"
    assert (stored.channel_id, stored.thread_ts, stored.mimetype) == ("C1", parent["ts"], "image/png")
    shared = stub.replies[("C1", parent["ts"])][-1]
    assert shared["files"][0]["id"] == stored.id and shared["text"] == "here"
    info = await client.files_info(file=stored.id)
    assert info["file"]["shares"]["public"]["C1"][0]["thread_ts"] == parent["ts"]


async def test_a_429_is_retried_after_retry_after_by_the_rate_limit_handler(stub: SlackStub) -> None:
    handlers: list[AsyncRetryHandler] = [AsyncRateLimitErrorRetryHandler(max_retry_count=1)]
    client = web(stub, retry_handlers=handlers)
    posted = await client.chat_postMessage(channel="C1", text="v1")
    stub.fail_next("chat.update", status=429, retry_after=1)
    started = time.monotonic()
    await client.chat_update(channel="C1", ts=posted["ts"], text="v2")
    assert time.monotonic() - started >= 1.0
    assert [(c.status, c.error) for c in stub.calls_to("chat.update")] == [(429, "ratelimited"), (200, None)]
    assert stub.messages["C1"][0]["text"] == "v2"

    stub.fail_next("chat.postMessage", retry_after=7)  # without a handler the error surfaces, Retry-After readable
    with pytest.raises(SlackApiError) as caught:
        await web(stub).chat_postMessage(channel="C1", text="x")
    assert caught.value.response.status_code == 429 and caught.value.response.headers["Retry-After"] == "7"
    stub.fail_next("chat.postMessage", status=200, error="channel_is_archived")
    with pytest.raises(SlackApiError) as caught:
        await web(stub).chat_postMessage(channel="C1", text="x")
    assert caught.value.response["error"] == "channel_is_archived"


async def test_url_private_needs_the_bot_token(stub: SlackStub) -> None:
    file = stub.add_file("notes.txt", b"hello file", "text/plain")
    secret = stub.add_file("secret.pdf", b"%PDF", "application/pdf", forbidden=True)
    async with aiohttp.ClientSession() as http:
        async with http.get(file["url_private"], headers={"Authorization": "Bearer xoxb-test"}) as r:
            assert (r.status, await r.read(), r.content_type) == (200, b"hello file", "text/plain")
        async with http.get(file["url_private_download"]) as r:
            assert r.status == 403
        async with http.get(secret["url_private"], headers={"Authorization": "Bearer xoxb-test"}) as r:
            assert r.status == 403
    assert stub.downloads == [(file["id"], True, 200), (file["id"], False, 403), (secret["id"], True, 403)]
    stub.unauthorized_download = "login_page"  # what slack.com really answers a missing token with
    async with aiohttp.ClientSession() as http, http.get(file["url_private"]) as r:
        assert (r.status, r.content_type) == (200, "text/html")


@pytest.mark.filterwarnings("ignore:The top-level `text`:UserWarning", "ignore:client.files_upload:UserWarning")
async def test_api_errors_look_like_slacks(stub: SlackStub) -> None:
    for client, call, error in [
        (web(stub), lambda c: c.api_call("no.such.method"), "unknown_method"),
        (web(stub, token=None), lambda c: c.chat_postMessage(channel="C1", text="x"), "not_authed"),
        (web(stub, token="xapp-1"), lambda c: c.chat_postMessage(channel="C1", text="x"), "not_allowed_token_type"),
        (web(stub), lambda c: c.apps_connections_open(app_token="xoxb-nope"), "not_allowed_token_type"),
        (web(stub), lambda c: c.chat_postMessage(channel="C1"), "no_text"),
        (web(stub), lambda c: c.users_info(user="U404"), "user_not_found"),
        (web(stub), lambda c: c.files_upload(content="x", channels="C1"), "method_deprecated"),
    ]:
        with pytest.raises(SlackApiError) as caught:
            await call(client)
        assert caught.value.response.status_code == 200 and caught.value.response["error"] == error
    stub.revoke("xoxb-gone")
    with pytest.raises(SlackApiError, match="token_revoked"):
        await web(stub, token="xoxb-gone").auth_test()


@pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning")  # slack_sdk on aiohttp 3.14
async def test_oauth_v2_access_installs_a_token_that_auth_test_knows(stub: SlackStub) -> None:
    code = stub.issue_oauth_code(team_id="T9", team_name="Nine")
    client = web(stub, token=None)
    with pytest.raises(SlackApiError, match="bad_client_secret"):
        await client.oauth_v2_access(client_id="111.222", client_secret="wrong", code=code)
    installed = await client.oauth_v2_access(client_id="111.222", client_secret="shh", code=code)
    assert installed["access_token"].startswith("xoxb-installed-") and installed["team"] == {"id": "T9", "name": "Nine"}
    assert installed["bot_user_id"] == "UBOT" and installed["authed_user"]["id"] == "U1"
    who = await client.auth_test(token=installed["access_token"])
    assert (who["team_id"], who["bot_id"]) == ("T9", "BBOT")
    with pytest.raises(SlackApiError, match="invalid_code"):
        await client.oauth_v2_access(client_id="111.222", client_secret="shh", code=code)
    assert "client_secret" not in stub.calls_to("oauth.v2.access")[0].params

    async with aiohttp.ClientSession() as http:  # the browser half: consent redirects back with code and state
        query = {"client_id": "111.222", "scope": "chat:write", "state": "st8",
                 "redirect_uri": "https://bot.example/slack/oauth_redirect"}
        async with http.get(stub.base + "/oauth/v2/authorize", params=query, allow_redirects=False) as r:
            location = URL(r.headers["Location"])
    assert location.query["state"] == "st8" and location.path == "/slack/oauth_redirect"
    fresh = await client.oauth_v2_access(client_id="111.222", client_secret="shh", code=location.query["code"])
    assert fresh["scope"] == "chat:write"


def test_sign_matches_slack_sdks_signature_verifier() -> None:
    body = form_body({"command": "/ask", "text": "hello world & more"})
    headers = sign(body, "s3cret")
    verifier = SignatureVerifier("s3cret")
    assert verifier.is_valid_request(body, headers)
    assert verifier.is_valid_request(body.decode(), headers)
    assert not SignatureVerifier("other").is_valid_request(body, headers)
    assert not verifier.is_valid_request(body, sign(body, "s3cret", timestamp=int(time.time()) - 600))


async def test_bolt_socket_mode_receives_events_acks_and_survives_a_disconnect(stub: SlackStub) -> None:
    app = AsyncApp(client=web(stub))
    seen: list[dict[str, Any]] = []

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any], say: Any) -> None:
        seen.append(event)
        await say(text=f"hi <@{event['user']}>", thread_ts=event["ts"])

    @app.command("/ask")
    async def on_ask(ack: Any, respond: Any, command: dict[str, Any]) -> None:
        await ack(f"asking: {command['text']}")
        await respond(text="done", response_type="in_channel")

    handler = AsyncSocketModeHandler(app, "xapp-test")
    try:
        await handler.connect_async()
        await asyncio.wait_for(stub.socket.connected.wait(), 5)
        assert stub.calls_to("apps.connections.open")[0].token == "xapp-"

        mention = app_mention(f"<@{BOT_USER_ID}> hello")
        envelope_id = await stub.socket.send_envelope("events_api", event_callback(mention))
        ack = await stub.socket.wait_ack(envelope_id)
        assert ack["envelope_id"] == envelope_id and "payload" not in ack
        assert stub.socket.acks[envelope_id].latency_s is not None
        reply = await stub.wait_for_message("C1")
        assert reply["text"] == "hi <@U1>" and reply["thread_ts"] == mention["ts"]
        assert seen[0]["text"] == mention["text"]

        command_id = await stub.socket.send_envelope("slash_commands", stub.slash_command("/ask", "why?"))
        assert (await stub.socket.wait_ack(command_id))["payload"] == {"text": "asking: why?"}
        await stub.wait_for_message("C1", where=lambda m: m.get("text") == "done")
        assert stub.response_posts[0].body["response_type"] == "in_channel"

        await stub.socket.disconnect()
        await asyncio.wait_for(stub.socket.connected.wait(), 5)
        assert stub.socket.connections == 2 and len(stub.calls_to("apps.connections.open")) == 2
        again = await stub.socket.send_envelope("events_api", event_callback(app_mention("<@UBOT> again")))
        await stub.socket.wait_ack(again)
        await stub.wait_for_message("C1", where=lambda m: m.get("thread_ts") == seen[-1]["ts"] and len(seen) == 2)
    finally:
        await handler.close_async()


async def test_bolt_block_actions_ack_and_respond_replaces_the_clicked_message(stub: SlackStub) -> None:
    app = AsyncApp(client=web(stub))
    heard: list[str] = []

    @app.action("approve")
    async def on_approve(ack: Any, respond: Any, action: dict[str, Any]) -> None:
        await ack()
        await respond(text=f"approved {action['value']}", replace_original=True)

    @app.message("hello")
    async def on_hello(message: dict[str, Any]) -> None:
        heard.append(message["user"])

    handler = AsyncSocketModeHandler(app, "xapp-test")
    try:
        await handler.connect_async()
        posted = await web(stub).chat_postMessage(channel="C1", text="approve?")
        click = stub.block_action("approve", "req-7", message_ts=posted["ts"])
        assert click["message"]["text"] == "approve?"
        ack = await stub.socket.wait_ack(await stub.socket.send_envelope("interactive", click))
        assert "payload" not in ack
        await stub.wait_for_call("response_url")
        assert stub.messages["C1"][0]["text"] == "approved req-7"
        assert stub.edit_history("C1", posted["ts"])[0]["text"] == "approve?"

        own = message_event("hello from me", user="UBOT", bot_id="BBOT")  # bolt drops the app's own messages
        await stub.socket.wait_ack(await stub.socket.send_envelope("events_api", event_callback(own)))
        theirs = message_event("hello bot", user="U2")
        await stub.socket.wait_ack(await stub.socket.send_envelope("events_api", event_callback(theirs)))
        await SlackStub._wait(lambda: heard or None, 5)
        assert heard == ["U2"]
    finally:
        await handler.close_async()


async def test_unacked_events_are_redelivered_and_dropped_sockets_are_noticed(stub: SlackStub) -> None:
    stub.socket.redeliver_after_s = 0.2
    received: list[SocketModeRequest] = []

    async def listener(client: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        received.append(request)
        if request.retry_attempt:  # ignore the first delivery, ack the retry
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))

    client = SocketModeClient(app_token="xapp-test", web_client=web(stub), ping_interval=0.3)
    client.socket_mode_request_listeners.append(listener)
    try:
        await client.connect()
        await asyncio.wait_for(stub.socket.connected.wait(), 5)
        first = await stub.socket.send_envelope("events_api", event_callback(app_mention("<@UBOT> hey")))
        await SlackStub._wait(lambda: stub.socket.acks or None, 5)
        assert [(r.retry_attempt, r.retry_reason) for r in received] == [(0, ""), (1, "timeout")]
        assert first not in stub.socket.acks and received[1].envelope_id in stub.socket.acks
        assert received[0].payload["event_id"] == received[1].payload["event_id"]

        stub.socket.redeliver_after_s = None
        await stub.socket.disconnect(abrupt=True)
        await asyncio.wait_for(stub.socket.connected.wait(), 5)
        envelope_id = await stub.socket.send_envelope("events_api", event_callback(app_mention("x")),
                                                      retry_attempt=1, retry_reason="timeout")
        await stub.socket.wait_ack(envelope_id)
        assert stub.socket.connections == 2
    finally:
        await client.close()


async def test_socket_mode_refuses_unissued_urls(stub: SlackStub) -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await http.ws_connect(stub.socket.url + "?ticket=forged")
        async with http.ws_connect(stub.socket.issue_url()) as ws:
            hello = json.loads((await ws.receive()).data)
            assert hello["type"] == "hello" and hello["connection_info"]["app_id"] == "A0APP"
    assert stub.socket.rejected == 1
