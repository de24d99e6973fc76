"""Long replies split at paragraph and fence boundaries, never leaving a fence open."""

from __future__ import annotations

import pytest

from bot.textsplit import split_message


def fences_balanced(chunk: str) -> bool:
    return sum(1 for line in chunk.split("\n") if line.strip().startswith("```")) % 2 == 0


def test_short_text_is_one_chunk() -> None:
    assert split_message("hello", 100) == ["hello"]


def test_prefers_paragraph_boundaries() -> None:
    paragraphs = [f"Paragraph {i} " + "word " * 30 for i in range(10)]
    text = "\n\n".join(p.strip() for p in paragraphs)
    chunks = split_message(text, 500)
    assert all(len(c) <= 500 for c in chunks)
    # every chunk starts with a paragraph's beginning
    assert all(c.startswith("Paragraph") for c in chunks)
    assert "".join(c.replace("\n", "").replace(" ", "") for c in chunks) == text.replace("\n", "").replace(" ", "")


@pytest.mark.parametrize("limit", [2000, 4000])
def test_code_fence_is_closed_and_reopened_with_language(limit: int) -> None:
    code = "\n".join(f"    value_{i} = compute({i})  # step {i}" for i in range(400))
    text = "Here is the code:\n\n```python\n" + code + "\n```\n\nThat's all."
    chunks = split_message(text, limit)
    assert len(chunks) > 1
    for chunk in chunks:
        assert len(chunk) <= limit
        assert fences_balanced(chunk), chunk[:80]
    assert all(c.startswith("```python") for c in chunks[1:-1])
    # no line of code is lost or duplicated
    lines = [ln for c in chunks for ln in c.split("\n") if "value_" in ln]
    assert len(lines) == 400
    assert chunks[-1].endswith("That's all.")


def test_unbreakable_text_is_cut_hard() -> None:
    chunks = split_message("x" * 9000, 4000)
    assert [len(c) for c in chunks][:2] == [3996, 3996] or all(len(c) <= 4000 for c in chunks)
    assert "".join(chunks) == "x" * 9000


def test_nine_thousand_chars_with_fences_arrive_in_several_messages() -> None:
    block = "```js\n" + "\n".join(f"console.log({i});" for i in range(150)) + "\n```"
    text = "\n\n".join(["Intro " * 100, block, "Middle " * 300, block, "End " * 100])
    assert len(text) > 8000
    chunks = split_message(text, 4000)
    assert len(chunks) >= 3
    assert all(len(c) <= 4000 and fences_balanced(c) for c in chunks)
