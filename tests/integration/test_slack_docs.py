"""Documents and analytics through Slack: a file shared with the bot joins the channel's knowledge base,
another workspace never sees it, /similar links to the earlier messages, /sentiment and /topics answer."""

from __future__ import annotations

import re
from typing import Any

from bot.app import RunningApp
from tests.integration.test_docs import HANDBOOK, grounded
from tests.integration.test_slack import deliver, post
from tests.support.openai_stub import OpenAIStub, Reply, message_text
from tests.support.slack_stub import SlackStub, app_mention, event_callback, form_body

FORM = "application/x-www-form-urlencoded"


async def command(app: RunningApp, stub: SlackStub, text: str, **kwargs: Any) -> None:
    name, _, rest = text.partition(" ")
    status, _ = await post(app, form_body(stub.slash_command(name, rest, **kwargs)), content_type=FORM)
    assert status == 200


async def test_a_shared_pdf_is_answered_from_in_its_workspace_only(
        slack_app: RunningApp, slack_stub: SlackStub, openai_stub: OpenAIStub) -> None:
    openai_stub.responder = grounded
    slack_app.services.settings.docs.min_similarity = 0.1
    file = slack_stub.add_file("handbook.pdf", HANDBOOK, "application/pdf")
    await deliver(slack_app, event_callback(app_mention("<@UBOT> our handbook", channel="C1", files=[file])))
    added = await slack_stub.wait_for_message("C1", where=lambda m: "handbook.pdf" in m.get("text", ""))
    assert "3 page(s)" in added["text"]

    await command(slack_app, slack_stub, "/ask Which travel agency do we book trips through?")
    answer = await slack_stub.wait_for_message("C1", where=lambda m: "Sources" in m.get("text", ""))
    assert "Northwind" in answer["text"] and "handbook.pdf" in answer["text"]

    # Another workspace (team) asking in a channel of the same name: nothing.
    await command(slack_app, slack_stub, "/ask Which travel agency do we book trips through?", team="T-OTHER")
    await slack_stub.wait_for_call("chat.postEphemeral")
    refusal = slack_stub.calls_to("chat.postEphemeral")[-1].params["text"]
    assert "no documents" in refusal and "Northwind" not in refusal


async def test_similar_links_to_earlier_messages_and_sentiment_answers(
        slack_app: RunningApp, slack_stub: SlackStub, openai_stub: OpenAIStub) -> None:
    openai_stub.responder = lambda body: Reply(text="noted")
    said = ["the staging deploy failed again with a timeout", "lunch at the noodle place today?",
            "deploy pipeline is red on staging, timeout in the migrate step"]
    events = []
    for text in said:
        event = app_mention(f"<@UBOT> {text}", channel="C2")
        events.append(event)
        await deliver(slack_app, event_callback(event))
        await slack_stub.wait_for_message("C2", where=lambda m, ts=event["ts"]: m.get("thread_ts") == ts
                                          and "noted" in m.get("text", ""))
    await command(slack_app, slack_stub, "/similar staging deploy timeout", channel="C2")
    found = await slack_stub.wait_for_message("C2", where=lambda m: "Messages like" in m.get("text", ""))
    lines = [line for line in found["text"].splitlines() if re.match(r"\d+\.", line)]
    assert "deploy" in lines[0] and "deploy" in lines[1] and "noodle" in lines[2]
    for event in (events[0], events[2]):
        assert f"https://stub.slack.com/archives/C2/p{event['ts'].replace('.', '')}" in found["text"]

    await command(slack_app, slack_stub, "/topics", channel="C2")
    too_few = await slack_stub.wait_for_call("chat.postEphemeral")
    assert too_few is not None
    assert "needs at least" in slack_stub.calls_to("chat.postEphemeral")[-1].params["text"]

    asked: list[str] = []

    def judge(body: dict[str, Any]) -> Reply:
        asked.append(message_text(body["messages"][-1]["content"]))
        return Reply(text="Negative.")

    openai_stub.responder = judge
    # Never sure enough: the chat model decides, and says so.
    slack_app.services.settings.docs.sentiment_min_confidence = 1.01
    await command(slack_app, slack_stub, "/sentiment this outage is a disaster and I am furious", channel="C2")
    verdict = await slack_stub.wait_for_message("C2", where=lambda m: "Sentiment" in m.get("text", ""))
    assert "*negative*" in verdict["text"] and "checked by the chat model" in verdict["text"]
    assert any("this outage is a disaster" in text for text in asked)
    # No fallback: the embeddings decide alone.
    slack_app.services.settings.docs.sentiment_fallback = False
    before = len(asked)
    await command(slack_app, slack_stub, "/sentiment thanks so much, the release went great", channel="C2")
    verdict = await slack_stub.wait_for_message("C2", where=lambda m: "by embeddings" in m.get("text", ""))
    assert len(asked) == before
