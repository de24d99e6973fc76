"""The registry parses typed options, suggests close commands and generates its schema."""

from __future__ import annotations

import pytest

from bot.context import HandlerContext
from bot.errors import UserFacingError
from bot.events import Attachment, EventKind, IncomingEvent
from bot.messages import t
from bot.router import Option, OptionType, Router, split_command
from handlers import build_router


async def _noop(event: IncomingEvent, ctx: HandlerContext) -> None:
    return None


def make_router() -> Router:
    router = Router()
    router.command(
        "imagine", "cmd_help",
        options=[
            Option("prompt", OptionType.TEXT, "cmd_help_command", required=True),
            Option("steps", OptionType.INTEGER, "cmd_help_command", min_value=1, max_value=100),
            Option("guidance", OptionType.NUMBER, "cmd_help_command"),
            Option("hd", OptionType.BOOLEAN, "cmd_help_command"),
            Option("size", OptionType.TEXT, "cmd_help_command", choices=("256", "512")),
            Option("image", OptionType.ATTACHMENT, "cmd_help_command"),
        ],
    )(_noop)
    return router


async def _fetch(limit: int) -> bytes:
    return b"x"


def test_split_command() -> None:
    assert split_command("/Imagine a red fox") == ("imagine", "a red fox")
    assert split_command("/help") == ("help", "")
    assert split_command("hello /help") is None
    assert split_command("/ 123") is None


def test_parse_named_positional_and_flags() -> None:
    router = make_router()
    cmd = router.commands["imagine"]
    args = router.parse_args(cmd, 'a red fox at dawn steps:20 --guidance 7.5 --hd size=512', [])
    assert args == {"prompt": "a red fox at dawn", "steps": 20, "guidance": 7.5, "hd": True, "size": "512"}


def test_text_with_colons_stays_text() -> None:
    router = make_router()
    args = router.parse_args(router.commands["imagine"], "see http://example.test/x today", [])
    assert args["prompt"] == "see http://example.test/x today"


def test_attachment_fills_attachment_option() -> None:
    router = make_router()
    att = Attachment("a.png", "image/png", 1, _fetch)
    args = router.parse_args(router.commands["imagine"], "a cat", [att])
    assert args["image"] is att


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("", "missing_option"),
        ("fox steps:many", "bad_option"),
        ("fox steps:1.5", "bad_option"),
        ("fox steps:500", "out_of_range"),
        ("fox size:1024", "bad_choice"),
        ("fox hd:maybe", "bad_option"),
        ("fox --colour red", "unknown_option"),
    ],
)
def test_bad_options_name_the_problem(line: str, key: str) -> None:
    router = make_router()
    with pytest.raises(UserFacingError) as info:
        router.parse_args(router.commands["imagine"], line, [])
    assert info.value.key == key
    # the message renders in both languages with the option's name in it
    for locale in ("en", "zh"):
        text = t(info.value.key, locale, **info.value.params)
        assert "/imagine" in text


def test_unknown_command_suggests_closest() -> None:
    router = build_router()
    err = router.unknown("hepl")
    assert err.key == "unknown_command_suggest" and err.params["suggestion"] == "help"
    assert "/help" in t(err.key, "en", **err.params)
    far = router.unknown("zzzzzz")
    assert far.key == "unknown_command_plain"


def test_resolve_unknown_command_raises() -> None:
    router = build_router()
    event = IncomingEvent("web", EventKind.COMMAND, "e1", "w", "c", "u", command="pingg")
    with pytest.raises(UserFacingError) as info:
        router.resolve(event)
    assert info.value.params["suggestion"] == "ping"


def test_registry_rejects_duplicates_and_unknown_description_keys() -> None:
    router = make_router()
    with pytest.raises(ValueError, match="twice"):
        router.command("imagine", "cmd_help")(_noop)
    with pytest.raises(ValueError, match=r"not in bot\.messages"):
        router.command("draw", "no_such_key")(_noop)


def test_schema_is_localized() -> None:
    router = build_router()
    en = {c["name"]: c for c in router.schema("en")}
    zh = {c["name"]: c for c in router.schema("zh")}
    assert {"help", "ping", "whoami", "reset"} <= set(en)
    assert en["ping"]["description"] != zh["ping"]["description"]
    assert en["help"]["options"][0]["name"] == "command"
