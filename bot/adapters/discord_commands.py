"""Discord application commands generated from the router's registry, with Chinese localizations."""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any

import discord
from discord import app_commands

from bot.messages import t
from bot.router import Command, OptionType, Router

TYPES: dict[OptionType, type] = {
    OptionType.TEXT: str, OptionType.INTEGER: int, OptionType.NUMBER: float, OptionType.BOOLEAN: bool,
    OptionType.ATTACHMENT: discord.Attachment,
}
ZH = (discord.Locale.chinese, discord.Locale.taiwan_chinese)

Invoke = Callable[[discord.Interaction, Command, dict[str, Any]], Awaitable[None]]


class RegistryTranslator(app_commands.Translator):
    """Descriptions carry their message key; Discord's Chinese locales get the Chinese text."""

    async def translate(self, string: app_commands.locale_str, locale: discord.Locale,
                        context: app_commands.TranslationContextTypes) -> str | None:
        key = string.extras.get("key")
        if key and locale in ZH:
            return t(key, "zh")[:100]
        return None


def _text(key: str) -> app_commands.locale_str:
    return app_commands.locale_str(t(key, "en")[:100], key=key)


def build_commands(router: Router, invoke: Invoke) -> list[app_commands.Command[Any, Any, Any]]:
    """One app command per registry command: typed options, choices, descriptions in both languages."""
    commands = []
    for cmd in sorted(router.commands.values(), key=lambda c: c.name):
        commands.append(_command(cmd, invoke))
    return commands


def _command(cmd: Command, invoke: Invoke) -> app_commands.Command[Any, Any, Any]:
    async def callback(interaction: discord.Interaction, **values: Any) -> None:
        await invoke(interaction, cmd, {k: v for k, v in values.items() if v is not None})

    # Options become keyword parameters; discord.py reads names, types and defaults from the signature.
    required = [o for o in cmd.options if o.required]
    optional = [o for o in cmd.options if not o.required]
    params = [inspect.Parameter("interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                annotation=discord.Interaction)]
    for option in [*required, *optional]:
        params.append(inspect.Parameter(
            option.name, inspect.Parameter.KEYWORD_ONLY, annotation=TYPES[option.type],
            default=inspect.Parameter.empty if option.required else None,
        ))
    callback.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    callback.__annotations__ = {p.name: p.annotation for p in params}
    described = app_commands.describe(**{o.name: _text(o.description) for o in cmd.options})(callback)
    choices = {o.name: [app_commands.Choice(name=c, value=c) for c in o.choices] for o in cmd.options if o.choices}
    if choices:
        described = app_commands.choices(**choices)(described)
    return app_commands.Command(name=cmd.name, description=_text(cmd.description), callback=described)


def payload_hash(payload: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
