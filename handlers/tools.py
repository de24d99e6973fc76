"""Tools the chat engine may call, declared once: each becomes an OpenAI `tools` entry, and a call
(from `tool_calls`, or JSON a small model wrote in its text) is validated before it runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bot.context import HandlerContext
from bot.errors import UserFacingError
from engines.llm import ToolCall

JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict,
}


@dataclass(frozen=True)
class Tool:
    """A function the model can call: a JSON-schema `parameters` object and the coroutine to run."""

    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[[dict[str, Any], HandlerContext], Awaitable[str]]

    def spec(self) -> dict[str, Any]:
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Check required properties and their JSON types; raise a message the model can act on."""
        props: dict[str, Any] = self.parameters.get("properties", {})
        missing = [p for p in self.parameters.get("required", []) if p not in arguments]
        if missing:
            raise UserFacingError("tool_args_missing", tool=self.name, missing=", ".join(missing))
        for key, value in arguments.items():
            if key not in props:
                raise UserFacingError("tool_args_unknown", tool=self.name, argument=key)
            expected = JSON_TYPES.get(props[key].get("type", ""), object)
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise UserFacingError("tool_args_type", tool=self.name, argument=key, expected=props[key]["type"])
            if "enum" in props[key] and value not in props[key]["enum"]:
                raise UserFacingError("tool_args_type", tool=self.name, argument=key,
                                      expected=" | ".join(map(str, props[key]["enum"])))
        return arguments


class ToolBox:
    """The tools offered in one request."""

    def __init__(self, tools: Sequence[Tool]) -> None:
        self.tools = {t.name: t for t in tools}

    def specs(self) -> list[dict[str, Any]]:
        return [t.spec() for t in self.tools.values()]

    def prepare(self, call: ToolCall) -> tuple[Tool, dict[str, Any]]:
        """The tool and its validated arguments; `UserFacingError` when either is wrong."""
        tool = self.tools.get(call.name)
        if tool is None:
            raise UserFacingError("tool_unknown", tool=call.name, tools=", ".join(self.tools))
        return tool, tool.validate(call.parsed())

    async def call(self, call: ToolCall, ctx: HandlerContext) -> str:
        tool, arguments = self.prepare(call)
        return await tool.run(arguments, ctx)
