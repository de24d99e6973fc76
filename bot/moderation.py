"""Moderation of what people send and what the bot answers, by the workspace's and channel's policy.

`screen` scores a text with the moderation engine (the fallback engine when that fails, logged),
applies the policy (a threshold and an action per category: allow, warn, block, report), writes
every decision that is not "allow" to the audit log, and reports to the moderators' channel.
`enforce` turns a blocking verdict into a `UserFacingError`, so a blocked message never reaches a
handler or an engine. `reply_guard` is what responders call on the bot's own replies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.errors import EngineError, UserFacingError
from bot.settings import CategoryRule

if TYPE_CHECKING:
    from bot.context import HandlerContext
    from bot.events import IncomingEvent
    from engines.moderation import ModerationResult

log = logging.getLogger(__name__)

SEVERITY = {"allow": 0, "warn": 1, "block": 2, "report": 3}
RULES_KEY = "mod_rules"  # scoped setting: {category: {"threshold": x, "action": a}}
REPORT_KEY = "mod_report_channel"  # workspace setting: the moderators' channel (platform id)
MUTED_KEY = "muted"  # workspace setting: {user id: unix time the mute ends, 0 for never}
EXCERPT = 120
BOT_AUTHORED = frozenset({"help"})  # commands whose replies are templates, never model output


@dataclass(frozen=True)
class Verdict:
    action: str  # allow | warn | block | report
    categories: tuple[str, ...]  # those at or over their threshold
    scores: dict[str, float]
    provider: str
    injection: bool

    @property
    def blocks(self) -> bool:
        return self.action in ("block", "report")


async def score(ctx: HandlerContext, text: str) -> ModerationResult:
    """Scores from the moderation engine, or from the fallback engine (logged) when it fails."""
    from engines.moderation import ModerationRequest

    settings = ctx.settings.moderation
    request = ModerationRequest(text)
    try:
        result: ModerationResult = await ctx.pool.run(settings.engine, request)
        return result
    except EngineError as e:
        fallback = settings.fallback_engine
        if not fallback or fallback == settings.engine or fallback not in ctx.settings.engines:
            raise
        log.warning("moderation engine %r failed (%s: %s); falling back to %r", settings.engine,
                    type(e).__name__, str(e)[:200], fallback)
        result = await ctx.pool.run(fallback, request)
        return result


async def rules(ctx: HandlerContext) -> dict[str, CategoryRule]:
    """The service's rules, then the workspace's overrides, then the channel's."""
    merged = {name: rule.model_copy() for name, rule in ctx.settings.moderation.rules.items()}
    if ctx.identity is None:
        return merged
    for scope, scope_id in (("workspace", ctx.identity.workspace_pk), ("channel", ctx.identity.channel_pk)):
        stored = (await ctx.store.scoped.get(scope, scope_id)).get(RULES_KEY) or {}  # type: ignore[arg-type]
        for name, values in stored.items():
            if name in merged and isinstance(values, dict):
                merged[name] = merged[name].model_copy(update=values)
    return merged


def decide(result: ModerationResult, policy: dict[str, CategoryRule]) -> Verdict:
    over = [c for c, rule in policy.items() if result.scores.get(c, 0.0) >= rule.threshold]
    action = max((policy[c].action for c in over), key=SEVERITY.__getitem__, default="allow")
    return Verdict(action, tuple(over), dict(result.scores), result.provider, result.injection)


async def judged(ctx: HandlerContext, text: str, result: ModerationResult,
                 policy: dict[str, CategoryRule]) -> ModerationResult:
    """With `judge_borderline`, scores just under a threshold are settled by the chat model."""
    settings = ctx.settings.moderation
    near = [c for c, r in policy.items()
            if r.threshold - settings.judge_margin <= result.scores.get(c, 0.0) < r.threshold]
    if not settings.judge_borderline or not near:
        return result
    from engines.llm import ChatRequest, ChatResult
    from engines.moderation import judge_prompt, parse_judge

    try:
        answer: ChatResult = await ctx.pool.run(ctx.settings.chat.engine, ChatRequest(
            messages=judge_prompt(text), model=ctx.settings.chat.model, temperature=0, max_tokens=60))
    except EngineError as e:
        log.warning("moderation judge failed (%s); keeping the engine's scores", type(e).__name__)
        return result
    verdict = parse_judge(answer.text) or {}
    scores = dict(result.scores)
    for category, value in verdict.items():
        if category in near:
            scores[category] = float(value)
    result.scores = scores
    return result


async def screen(ctx: HandlerContext, event: IncomingEvent, text: str, source: str) -> Verdict:
    """Score, decide, audit and report one text; the caller acts on the verdict."""
    policy = await rules(ctx)
    result = await judged(ctx, text, await score(ctx, text), policy)
    verdict = decide(result, policy)
    workspace_pk = ctx.identity.workspace_pk if ctx.identity else None
    if verdict.injection and ctx.settings.moderation.flag_injection and source != "reply":
        log.warning("possible prompt injection in %s from %s:%s", source, event.platform, event.user_id)
        await ctx.store.audit.log(f"{event.platform}:{event.user_id}", "moderation.injection",
                                  {"source": source, "channel": event.channel_id}, workspace_pk=workspace_pk)
    if verdict.action != "allow":
        detail: dict[str, Any] = {
            "source": source, "channel": event.channel_id, "categories": list(verdict.categories),
            "scores": {c: round(s, 3) for c, s in verdict.scores.items() if s >= 0.05},
            "provider": verdict.provider, "excerpt": " ".join(text.split())[:EXCERPT],
        }
        await ctx.store.audit.log(f"{event.platform}:{event.user_id}", f"moderation.{verdict.action}", detail,
                                  workspace_pk=workspace_pk)
    if verdict.action == "report":
        await report(ctx, event, verdict, text, source)
    return verdict


def category_names(ctx: HandlerContext, verdict: Verdict) -> str:
    """The verdict's categories in the user's language, for messages."""
    return ", ".join(ctx.t(f"mod_cat_{c}") for c in verdict.categories)


def bypassed(ctx: HandlerContext) -> bool:
    """True when the sender's role skips the checks of what they send."""
    return ctx.identity is not None and ctx.identity.role in ctx.settings.moderation.bypass_roles


async def enforce(ctx: HandlerContext, event: IncomingEvent, text: str, source: str) -> Verdict:
    """`screen`, then stop a blocked text with a message saying why, or warn and go on."""
    if not ctx.settings.moderation.enabled or not text.strip():
        return Verdict("allow", (), {}, "none", False)
    verdict = await screen(ctx, event, text, source)
    names = category_names(ctx, verdict)
    if verdict.blocks:
        key = "moderation_self_harm" if "self_harm" in verdict.categories else f"moderation_blocked_{source}"
        raise UserFacingError(key, categories=names)
    if verdict.action == "warn":
        await ctx.responder.send(ctx.t("moderation_warning", categories=names))
    return verdict


async def report_channel(ctx: HandlerContext, event: IncomingEvent) -> str | None:
    if ctx.identity is not None:
        stored = (await ctx.store.scoped.get("workspace", ctx.identity.workspace_pk)).get(REPORT_KEY)
        if stored:
            return str(stored)
    return ctx.settings.moderation.report_channels.get(f"{event.platform}:{event.workspace_id}")


async def report(ctx: HandlerContext, event: IncomingEvent, verdict: Verdict, text: str, source: str) -> None:
    channel = await report_channel(ctx, event)
    if channel is None:
        log.info("moderation report with no moderators' channel set for %s:%s", event.platform, event.workspace_id)
        return
    message = ctx.t("moderation_report", user=event.user_name or event.user_id, user_id=event.user_id,
                    channel=event.channel_id, source=source,
                    categories=", ".join(f"{c} {verdict.scores.get(c, 0):.2f}" for c in verdict.categories),
                    excerpt=" ".join(text.split())[:EXCERPT])
    try:
        await ctx.responder.notify(channel, message)
    except Exception as e:  # a report that cannot be delivered must not break the reply
        log.warning("could not report to moderators' channel %s: %s", channel, type(e).__name__)


async def muted_until(ctx: HandlerContext, event: IncomingEvent) -> float | None:
    """When the sender's mute ends (0: never), or None when they are not muted."""
    if ctx.identity is None:
        return None
    muted = (await ctx.store.scoped.get("workspace", ctx.identity.workspace_pk)).get(MUTED_KEY) or {}
    until = muted.get(event.user_id)
    if until is None or (until and float(until) < time.time()):
        return None
    return float(until)


def reply_guard(ctx: HandlerContext, event: IncomingEvent) -> Callable[[str], Awaitable[str | None]]:
    """What responders call with the text they are about to show: a replacement when it is blocked."""

    async def guard(text: str) -> str | None:
        command = ctx.command
        if not text.strip() or (command is not None and (command.role == "admin" or command.name in BOT_AUTHORED)):
            return None  # the bot's own texts (policy tables name the categories), not a model's
        verdict = await screen(ctx, event, text, "reply")
        return ctx.t("reply_removed") if verdict.blocks else None

    return guard
