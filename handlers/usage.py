"""Cost control: prices, the usage ledger, budgets with a warning and a stop, and /usage."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from bot.context import HandlerContext
from bot.errors import UserFacingError
from bot.events import IncomingEvent
from bot.router import Router
from engines.llm import ChatResult


def price_of(ctx: HandlerContext, model: str, tokens_in: int, tokens_out: int) -> Decimal:
    """Cost in US dollars from the `[chat.prices]` table (exact name, else the longest matching prefix)."""
    prices = ctx.settings.chat.prices
    key = model if model in prices else max((p for p in prices if model.startswith(p)), key=len, default=None)
    if key is None:
        return Decimal(0)
    price = prices[key]
    return (Decimal(str(price.input)) * tokens_in + Decimal(str(price.output)) * tokens_out) / Decimal(1_000_000)


async def record(ctx: HandlerContext, engine: str, **values: Any) -> None:
    """One usage-ledger row for the sender of this event (tokens, seconds, cost as `values`)."""
    identity = ctx.identity
    await ctx.store.usage.record(
        engine, **values,
        workspace_pk=identity.workspace_pk if identity else None,
        channel_pk=identity.channel_pk if identity else None,
        user_pk=identity.user_pk if identity else None,
    )


async def record_usage(ctx: HandlerContext, result: ChatResult, engine: str = "llm") -> None:
    await record(ctx, engine, model=result.model, tokens_in=result.tokens_in, tokens_out=result.tokens_out,
                 cost=price_of(ctx, result.model, result.tokens_in, result.tokens_out))


async def _budgets(ctx: HandlerContext) -> list[tuple[str, float, dict[str, Any]]]:
    """(scope, budget in USD, usage filter) for every scope with a budget; stored overrides win."""
    assert ctx.identity is not None
    chat, identity = ctx.settings.chat, ctx.identity
    workspace = (await ctx.store.scoped.get("workspace", identity.workspace_pk)).get("budget_usd")
    channel = (await ctx.store.scoped.get("channel", identity.channel_pk)).get("budget_usd")
    scopes = [
        ("user", chat.budget_user_usd, {"user_pk": identity.user_pk}),
        ("channel", channel if channel is not None else chat.budget_channel_usd, {"channel_pk": identity.channel_pk}),
        ("workspace", workspace if workspace is not None else chat.budget_workspace_usd,
         {"workspace_pk": identity.workspace_pk}),
    ]
    return [(scope, float(budget), keys) for scope, budget, keys in scopes if budget and float(budget) > 0]


async def check_budget(ctx: HandlerContext) -> str | None:
    """Raise `UserFacingError("budget_exhausted")` at 100% of any budget; a warning text at 80%."""
    if ctx.identity is None:
        return None
    since = datetime.now(UTC) - timedelta(days=ctx.settings.chat.budget_period_days)
    warning = None
    for scope, budget, keys in await _budgets(ctx):
        spent = float((await ctx.store.usage.totals(since, engine=None, **keys)).cost)
        if spent >= budget:
            raise UserFacingError("budget_exhausted", scope=ctx.t(f"scope_{scope}"), spent=f"{spent:.2f}",
                                  budget=f"{budget:.2f}", days=ctx.settings.chat.budget_period_days)
        if spent >= budget * ctx.settings.chat.budget_warn_fraction and warning is None:
            warning = ctx.t("budget_warning", scope=ctx.t(f"scope_{scope}"), percent=round(100 * spent / budget),
                            budget=f"{budget:.2f}")
    return warning


def usage_chart(days: list[tuple[date, int, Decimal]], title: str) -> bytes:
    """A bar chart PNG of tokens per day (bars) with the day's cost written above each bar."""
    from PIL import Image, ImageDraw

    width, height, margin = 760, 320, 48
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((margin, 12), title, fill="black")
    top = max((t for _, t, _ in days), default=0) or 1
    plot_w, plot_h = width - 2 * margin, height - 2 * margin - 10
    slot = plot_w / max(len(days), 1)
    draw.line((margin, height - margin, width - margin, height - margin), fill="#888")
    for i, (day, tokens, cost) in enumerate(days):
        bar_h = int(plot_h * tokens / top)
        x0 = margin + i * slot + slot * 0.15
        x1 = margin + (i + 1) * slot - slot * 0.15
        draw.rectangle((x0, height - margin - bar_h, x1, height - margin), fill="#4f46e5")
        if i % max(1, len(days) // 10) == 0:
            draw.text((x0, height - margin + 6), day.strftime("%m-%d"), fill="#333")
        if cost:
            draw.text((x0, height - margin - bar_h - 12), f"${cost:.2f}", fill="#333")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def usage_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    assert ctx.identity is not None
    today = datetime.now(UTC).date()
    since = datetime.combine(today - timedelta(days=29), datetime.min.time(), tzinfo=UTC)
    mine = dict(await ctx.store.usage.daily(since, user_pk=ctx.identity.user_pk))
    team = dict(await ctx.store.usage.daily(since, workspace_pk=ctx.identity.workspace_pk))
    days = [today - timedelta(days=29 - i) for i in range(30)]
    lines = [ctx.t("usage_title"), "```", f"{ctx.t('usage_day'):<10} {'calls':>6} {'tokens':>9} {'USD':>8}"]
    for day in days:
        if day in team:
            total = team[day]
            lines.append(f"{day.isoformat():<10} {total.calls:>6} {total.tokens_in + total.tokens_out:>9} "
                         f"{float(total.cost):>8.4f}")
    all_team = [team[d] for d in team]
    all_mine = [mine[d] for d in mine]
    lines.append(f"{'30 days':<10} {sum(t.calls for t in all_team):>6} "
                 f"{sum(t.tokens_in + t.tokens_out for t in all_team):>9} {float(sum(t.cost for t in all_team)):>8.4f}")
    lines.append("```")
    lines.append(ctx.t("usage_mine", calls=sum(t.calls for t in all_mine),
                       tokens=sum(t.tokens_in + t.tokens_out for t in all_mine),
                       cost=f"{float(sum((t.cost for t in all_mine), Decimal(0))):.4f}"))
    await ctx.responder.send("\n".join(lines))
    series = [(d, (team[d].tokens_in + team[d].tokens_out) if d in team else 0,
               team[d].cost if d in team else Decimal(0)) for d in days]
    await ctx.responder.upload(usage_chart(series, ctx.t("usage_chart_title")), "usage.png", "image/png")


def register(router: Router) -> None:
    router.command("usage", "cmd_usage", examples=("/usage",))(usage_command)
