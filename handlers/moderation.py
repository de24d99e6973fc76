"""Admin commands for moderation (`/mod policy|log|mute|unmute`) and per-day quotas (`/quota`).

The checks themselves run in `bot.moderation` (the middleware and the responders' reply guard);
quota checks are called by the handlers that spend a unit (`check_quota`).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from datetime import time as dtime

from bot.context import HandlerContext
from bot.errors import UserFacingError
from bot.events import IncomingEvent
from bot.moderation import MUTED_KEY, REPORT_KEY, RULES_KEY, rules
from bot.router import Option, OptionType, Router
from bot.settings import MODERATION_CATEGORIES
from handlers.chat_config import WORKSPACE

ACTIONS = ("allow", "warn", "block", "report")
UNITS = ("messages", "audio_minutes", "images", "video_seconds")
RESET_KEY = "quota_reset"  # workspace setting: {user id: unix time of the last reset}


def user_ref(raw: str) -> str:
    """A user id from a mention as the platforms write it (<@U123>, <@!123>, @U123) or a bare id."""
    match = re.search(r"<@!?([\w.-]+)>|@?([\w.-]+)", raw.strip())
    if not match:
        raise UserFacingError("mod_which_user")
    return match.group(1) or match.group(2)


async def _workspace_setting(ctx: HandlerContext, key: str) -> dict[str, object]:
    assert ctx.identity is not None
    value = (await ctx.store.scoped.get("workspace", ctx.identity.workspace_pk)).get(key)
    return dict(value) if isinstance(value, dict) else {}


async def _set_workspace(ctx: HandlerContext, event: IncomingEvent, key: str, value: object) -> None:
    assert ctx.identity is not None
    actor = f"{event.platform}:{event.user_id}"
    await ctx.store.scoped.set("workspace", ctx.identity.workspace_pk, key, value, actor)
    await ctx.store.audit.log(actor, f"mod.{key}", {"value": value}, workspace_pk=ctx.identity.workspace_pk)


# -- /mod -------------------------------------------------------------------------------------------------------------


async def mod_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    action = str(ctx.state["args"].get("action") or "policy")
    await {"policy": policy, "log": mod_log, "mute": mute, "unmute": unmute}[action](event, ctx)


async def policy(event: IncomingEvent, ctx: HandlerContext) -> None:
    assert ctx.identity is not None
    args = ctx.state["args"]
    if args.get("report_channel"):
        await _set_workspace(ctx, event, REPORT_KEY, user_ref(str(args["report_channel"]).replace("#", "")))
    category = args.get("category")
    if category:
        change = {k: v for k, v in (("threshold", args.get("threshold")), ("action", args.get("then")))
                  if v is not None}
        if not change:
            raise UserFacingError("mod_policy_what")
        workspace = bool(args.get("workspace"))
        scope, scope_id = (("workspace", ctx.identity.workspace_pk) if workspace
                           else ("channel", ctx.identity.channel_pk))
        stored = dict((await ctx.store.scoped.get(scope, scope_id)).get(RULES_KEY) or {})  # type: ignore[arg-type]
        stored[str(category)] = {**stored.get(str(category), {}), **change}
        actor = f"{event.platform}:{event.user_id}"
        await ctx.store.scoped.set(scope, scope_id, RULES_KEY, stored, actor)  # type: ignore[arg-type]
        await ctx.store.audit.log(actor, "mod.policy", {"scope": scope, "category": category, **change},
                                  workspace_pk=ctx.identity.workspace_pk)
    effective = await rules(ctx)
    lines = [ctx.t("mod_policy_line", category=ctx.t(f"mod_cat_{c}"), threshold=f"{r.threshold:.2f}",
                   action=ctx.t(f"mod_action_{r.action}")) for c, r in effective.items()]
    channel = (await ctx.store.scoped.get("workspace", ctx.identity.workspace_pk)).get(REPORT_KEY)
    lines.append(ctx.t("mod_report_channel", channel=channel or ctx.t("mod_none")))
    await ctx.responder.card(ctx.t("mod_policy_title"), "\n".join(lines))


async def mod_log(event: IncomingEvent, ctx: HandlerContext) -> None:
    assert ctx.identity is not None
    limit = int(ctx.state["args"].get("count") or 10)
    rows = [r for r in await ctx.store.audit.recent(200, workspace_pk=ctx.identity.workspace_pk)
            if r.action.startswith(("moderation.", "mod."))][:limit]
    if not rows:
        await ctx.responder.send(ctx.t("mod_log_empty"))
        return
    lines = []
    for row in rows:
        detail = row.detail or {}
        what = ", ".join(detail.get("categories") or []) or str(detail.get("value", detail.get("category", "")))
        lines.append(f"{row.created_at:%m-%d %H:%M} {row.action} {row.actor} {what} "
                     f"{detail.get('excerpt', '')}".rstrip())
    await ctx.responder.card(ctx.t("mod_log_title", count=len(lines)), "\n".join(lines))


async def mute(event: IncomingEvent, ctx: HandlerContext) -> None:
    args = ctx.state["args"]
    who = user_ref(str(args.get("user") or ""))
    minutes = args.get("minutes")
    muted = await _workspace_setting(ctx, MUTED_KEY)
    until = time.time() + float(minutes) * 60 if minutes else 0
    muted[who] = until
    await _set_workspace(ctx, event, MUTED_KEY, muted)
    when = datetime.fromtimestamp(until, UTC).strftime("%Y-%m-%d %H:%M UTC") if until else ctx.t("mute_forever")
    await ctx.responder.send(ctx.t("mod_muted", user=who, until=when))


async def unmute(event: IncomingEvent, ctx: HandlerContext) -> None:
    who = user_ref(str(ctx.state["args"].get("user") or ""))
    muted = await _workspace_setting(ctx, MUTED_KEY)
    if muted.pop(who, None) is None:
        raise UserFacingError("mod_not_muted", user=who)
    await _set_workspace(ctx, event, MUTED_KEY, muted)
    await ctx.responder.send(ctx.t("mod_unmuted", user=who))


# -- quotas -----------------------------------------------------------------------------------------------------------


async def _since(ctx: HandlerContext, user_id: str) -> datetime:
    midnight = datetime.combine(datetime.now(UTC).date(), dtime(0), UTC)
    reset = (await _workspace_setting(ctx, RESET_KEY)).get(user_id)
    return max(midnight, datetime.fromtimestamp(float(reset), UTC)) if reset else midnight  # type: ignore[arg-type]


async def used(ctx: HandlerContext, user_id: str, user_pk: int, unit: str) -> float:
    since = await _since(ctx, user_id)
    if unit == "messages":
        return float(await ctx.store.messages.count_user_messages(user_pk, since))
    engines = {"audio_minutes": ctx.settings.speech.stt_engine, "images": "diffusion", "video_seconds": "presenter"}
    engine = engines[unit]
    totals = await ctx.store.usage.totals(since, user_pk=user_pk, engine=engine)
    return {"audio_minutes": totals.seconds / 60, "images": float(totals.calls),
            "video_seconds": totals.seconds}[unit]


def limits_for(ctx: HandlerContext, role: str) -> dict[str, float]:
    return {unit: float(limit) for unit, limit in ctx.settings.quota.roles.get(role, {}).items() if limit}


async def check_quota(ctx: HandlerContext, event: IncomingEvent, unit: str) -> None:
    """Stop with a message when the sender has used up today's `unit` (nothing configured: no limit)."""
    assert ctx.identity is not None
    limit = limits_for(ctx, ctx.identity.role).get(unit)
    if limit is None:
        return
    spent = await used(ctx, event.user_id, ctx.identity.user_pk, unit)
    if spent >= limit:
        raise UserFacingError("quota_exceeded", unit=ctx.t(f"unit_{unit}"), limit=f"{limit:g}")


async def quota_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    assert ctx.identity is not None
    args = ctx.state["args"]
    target = user_ref(str(args["user"])) if args.get("user") else event.user_id
    if (target != event.user_id or args.get("reset")) and ctx.identity.role != "admin":
        raise UserFacingError("forbidden", command="quota user:/reset")
    if args.get("reset"):
        resets = await _workspace_setting(ctx, RESET_KEY)
        resets[target] = time.time()
        await _set_workspace(ctx, event, RESET_KEY, resets)
        await ctx.responder.send(ctx.t("quota_reset", user=target))
        return
    who = await ctx.store.identity.ensure(event.platform, event.workspace_id, event.channel_id, target)
    limits = limits_for(ctx, who.role)
    if not limits:
        await ctx.responder.send(ctx.t("quota_none", role=who.role))
        return
    lines = []
    for unit, limit in limits.items():
        spent = await used(ctx, target, who.user_pk, unit)
        lines.append(ctx.t("quota_line", unit=ctx.t(f"unit_{unit}"), used=f"{spent:g}", limit=f"{limit:g}",
                           left=f"{max(0.0, limit - spent):g}"))
    await ctx.responder.card(ctx.t("quota_title", user=target, role=who.role), "\n".join(lines))


def register(router: Router) -> None:
    router.command(
        "mod", "cmd_mod", role="admin",
        options=[Option("action", OptionType.TEXT, "opt_mod_action", choices=("policy", "log", "mute", "unmute")),
                 Option("user", OptionType.TEXT, "opt_mod_user"),
                 Option("category", OptionType.TEXT, "opt_mod_category", choices=MODERATION_CATEGORIES),
                 Option("threshold", OptionType.NUMBER, "opt_mod_threshold", min_value=0, max_value=1),
                 Option("then", OptionType.TEXT, "opt_mod_then", choices=ACTIONS),
                 Option("minutes", OptionType.INTEGER, "opt_mod_minutes", min_value=1),
                 Option("count", OptionType.INTEGER, "opt_mod_count", min_value=1, max_value=50),
                 Option("report_channel", OptionType.TEXT, "opt_mod_report_channel"), WORKSPACE],
        examples=("/mod policy", "/mod policy category:hate threshold:0.4 then:report workspace:yes",
                  "/mod policy report_channel:C0MODS", "/mod log", "/mod mute user:@bob minutes:60",
                  "/mod unmute user:@bob"))(mod_command)
    router.command(
        "quota", "cmd_quota",
        options=[Option("user", OptionType.TEXT, "opt_quota_user"), Option("reset", OptionType.BOOLEAN,
                                                                            "opt_quota_reset")],
        examples=("/quota", "/quota user:@bob reset:yes"))(quota_command)
