"""The agent's calculator evaluates arithmetic and nothing else; tool-call JSON a model could not be held to."""

from __future__ import annotations

import math

import pytest

from handlers.agent import looks_like_calls
from handlers.agent_tools import ToolFailed, evaluate


@pytest.mark.parametrize(("expression", "value"), [
    ("(3.5 + 2) * 4 ** 2", 88.0), ("2^10", 1024), ("7 // 2 + 7 % 2", 4), ("-3 + +2", -1), ("sqrt(2) ** 2", 2.0),
    ("max(1, 5, 3) - min(4, 2)", 3), ("round(pi, 3)", 3.142), ("6 × 7 ÷ 2", 21.0), ("log(e)", 1.0),
])
def test_arithmetic(expression: str, value: float) -> None:
    assert math.isclose(evaluate(expression), value)


@pytest.mark.parametrize("expression", [
    "__import__('os').system('true')", "open('/etc/passwd')", "(1).__class__", "[1, 2]", "x + 1", "1 / 0",
    "9 ** 9999", "sqrt(-1)", "2 +", "lambda: 1", "True + 1", "'a' * 3", "max(key=abs)",
])
def test_anything_else_is_refused(expression: str) -> None:
    with pytest.raises(ToolFailed) as refused:
        evaluate(expression)
    assert refused.value.key == "agent_bad_expression"


def test_tool_call_json_in_text_is_recognised() -> None:
    assert looks_like_calls('{"name": "current_time", "arguments": {}}\n{"name": "current_time"')
    assert looks_like_calls('```json\n{"name": "x", "arguments": {}}\n```')
    assert not looks_like_calls("The time is 12:30.")
    assert not looks_like_calls('{"answer": 42}')
