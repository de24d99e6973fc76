"""Suggested starter prompts, offered as buttons on first contact and under /help."""

from __future__ import annotations

from bot.context import HandlerContext
from bot.responder import Button

SUGGESTION_LABELS = {"/help": "suggest_help", "/ping": "suggest_ping", "/whoami": "suggest_whoami"}


def suggestion_buttons(ctx: HandlerContext) -> list[Button]:
    """The configured starter prompts, as buttons that run them when clicked."""
    buttons = []
    for prompt in ctx.settings.suggested_prompts:
        key = SUGGESTION_LABELS.get(prompt)
        buttons.append(Button(label=ctx.t(key) if key else prompt, action_id="suggest", value=prompt))
    return buttons
