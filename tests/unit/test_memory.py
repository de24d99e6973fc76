"""Prompt building for each memory strategy, fact parsing and tool-call parsing."""

from __future__ import annotations

from datetime import UTC, datetime

from engines.llm import ToolCall, tool_calls_from_text
from engines.tokens import estimate_tokens
from handlers.memory import MemoryState, build_messages, parse_facts, window
from storage.repositories.memory import FactRow, Summary
from storage.repositories.messages import MessageRow

NOW = datetime.now(UTC)


def history(turns: int) -> list[MessageRow]:
    rows = []
    for i in range(turns):
        rows.append(MessageRow(2 * i + 1, 1, "user", f"question {i}", 3, None, None, NOW))
        rows.append(MessageRow(2 * i + 2, 1, "assistant", f"answer {i}", 3, None, None, NOW))
    return rows


def contents(messages: list[dict[str, str]]) -> list[str]:
    return [m["content"] for m in messages]


def test_buffer_window_keeps_last_k_turns() -> None:
    state = MemoryState("buffer_window", history(12), Summary("", 0), [])
    messages = build_messages("SYS", state, "now?", window_turns=3)
    assert contents(messages) == ["SYS", "question 9", "answer 9", "question 10", "answer 10", "question 11",
                                  "answer 11", "now?"]


def test_summary_sends_only_the_summary() -> None:
    state = MemoryState("summary", history(12), Summary("They talked about numbers.", 24), [])
    messages = build_messages("SYS", state, "now?", window_turns=3)
    assert contents(messages) == ["SYS", "Summary of the conversation so far:\nThey talked about numbers.", "now?"]


def test_summary_buffer_sends_summary_and_unsummarized_turns() -> None:
    state = MemoryState("summary_buffer", history(12), Summary("Early talk.", 18), [])
    messages = build_messages("SYS", state, "now?", window_turns=3)
    assert contents(messages)[:2] == ["SYS", "Summary of the conversation so far:\nEarly talk."]
    assert contents(messages)[2:] == ["question 9", "answer 9", "question 10", "answer 10", "question 11",
                                      "answer 11", "now?"]


def test_entity_recalls_facts_about_named_things() -> None:
    facts = [FactRow(1, "Payments", "team that owns checkout", 1), FactRow(2, "Zed", "likes tea", 1)]
    state = MemoryState("entity", history(2), Summary("", 0), facts)
    messages = build_messages("SYS", state, "who owns payments?", window_turns=3)
    assert messages[1]["content"] == "What you know about things mentioned:\n- Payments: team that owns checkout"
    assert "Zed" not in str(messages)


def test_window_counts_turns_not_messages() -> None:
    assert [m.content for m in window(history(3), 1)] == ["question 2", "answer 2"]


def test_parse_facts_tolerates_fences_and_junk() -> None:
    text = 'Sure!\n```json\n{"facts": [{"entity": "Lin", "fact": "works on the payments team"}, {"x": 1}]}\n```'
    assert parse_facts(text) == [("Lin", "works on the payments team")]
    assert parse_facts("no json here") == []
    assert parse_facts('{"facts": [') == []


def test_tool_calls_from_text_variants() -> None:
    known = {"get_time", "imagine"}
    fenced = 'I will call it.\n```json\n{"name": "get_time", "arguments": {"tz": "UTC"}}\n```'
    assert tool_calls_from_text(fenced, known) == [ToolCall("text_0", "get_time", '{"tz": "UTC"}')]
    bare = '{"tool": "imagine", "parameters": {"prompt": "a cat"}}'
    assert tool_calls_from_text(bare, known)[0].parsed() == {"prompt": "a cat"}
    assert tool_calls_from_text('{"name": "rm_rf", "arguments": {}}', known) == []
    assert tool_calls_from_text("```json\n{broken\n```", known) == []


def test_malformed_tool_arguments_give_a_clear_error() -> None:
    import pytest

    from bot.errors import UserFacingError

    with pytest.raises(UserFacingError) as info:
        ToolCall("c1", "imagine", "{not json").parsed()
    assert info.value.key == "tool_args_invalid"


def test_token_estimate_counts_cjk_per_character() -> None:
    assert estimate_tokens("你好世界") == 4 + 1
    assert 20 <= estimate_tokens("word " * 20) <= 30
