"""The commands every installation has: /help, /ping, /whoami, /reset, and the fallbacks."""

from __future__ import annotations

import dataclasses
import time

from bot.context import HandlerContext
from bot.events import EventKind, IncomingEvent
from bot.router import Option, OptionType, Router, split_command
from bot.suggestions import suggestion_buttons


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


async def help_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    name = str(ctx.state["args"].get("command", "")).lstrip("/").lower()
    router = ctx.router
    if name:
        cmd = router.commands.get(name)
        if cmd is None:
            raise router.unknown(name)
        lines = [f"`{cmd.usage()}` — {cmd.describe(ctx.locale)}"]
        for opt in cmd.options:
            choices = f" ({', '.join(opt.choices)})" if opt.choices else ""
            need = "*" if opt.required else ""
            lines.append(f"• `{opt.name}{need}` ({ctx.t('type_' + opt.type.value)}): {ctx.t(opt.description)}{choices}")
        await ctx.responder.send("\n".join(lines))
        return
    is_admin = ctx.identity is not None and ctx.identity.role == "admin"
    lines = []
    for cmd in sorted(router.commands.values(), key=lambda c: c.name):
        if cmd.role == "admin" and not is_admin:
            continue
        lines.append(f"• `{cmd.usage()}` — {cmd.describe(ctx.locale)}")
    lines += ["", ctx.t("help_footer"), ctx.t("help_try")]
    await ctx.responder.card(ctx.t("help_title"), "\n".join(lines), buttons=suggestion_buttons(ctx))


async def ping(event: IncomingEvent, ctx: HandlerContext) -> None:
    db_s = await ctx.store.ping()
    job = ctx.pool.submit("noop", "ping", event_id=event.event_id)
    await job.result()
    total_ms = (time.monotonic() - event.received_at) * 1000
    await ctx.responder.send(
        ctx.t(
            "pong",
            total_ms=round(total_ms, 1),
            db_ms=round(db_s * 1000, 1),
            queue_ms=round(job.queue_s * 1000, 1),
            run_ms=round(job.run_s * 1000, 1),
        )
    )


async def whoami(event: IncomingEvent, ctx: HandlerContext) -> None:
    role = ctx.identity.role if ctx.identity else "user"
    await ctx.responder.send(
        ctx.t(
            "whoami",
            user=event.user_name or event.user_id,
            user_id=event.user_id,
            platform=event.platform,
            workspace=event.workspace_id,
            channel=event.channel_id,
            role=role,
            locale=ctx.locale,
        )
    )


async def reset(event: IncomingEvent, ctx: HandlerContext) -> None:
    assert ctx.identity is not None
    await ctx.store.conversations.reset(ctx.identity, event.conversation_key)
    await ctx.responder.send(ctx.t("reset_done"))


async def plain_message(event: IncomingEvent, ctx: HandlerContext) -> None:
    names = ", ".join(f"/{name}" for name in sorted(ctx.router.commands))
    buttons = [] if ctx.state.get("greeted") else suggestion_buttons(ctx)  # the greeting just offered them
    await ctx.responder.send(ctx.t("available", commands=names), buttons=buttons)


async def attachment_received(event: IncomingEvent, ctx: HandlerContext) -> None:
    """Until a feature claims this kind of file: check it, keep it, and say what arrived."""
    limit = ctx.settings.limits.max_upload_bytes
    lines = []
    for attachment in event.attachments:
        data = await attachment.read(limit)
        workspace_pk = ctx.identity.workspace_pk if ctx.identity else None
        await ctx.store.blobs.put(workspace_pk, attachment.name, attachment.mime, data)
        lines.append(ctx.t("file_received", name=attachment.name, size=human_size(len(data)), mime=attachment.mime))
    if event.text.strip():
        names = ", ".join(f"/{name}" for name in sorted(ctx.router.commands))
        lines.append(ctx.t("available", commands=names))
    await ctx.responder.send("\n".join(lines) or ctx.t("available", commands=""))


async def suggestion_clicked(event: IncomingEvent, ctx: HandlerContext) -> None:
    """A suggested-prompt button runs its prompt as if the user had typed it."""
    prompt = event.action_value or ""
    parsed = split_command(prompt)
    derived = dataclasses.replace(
        event,
        kind=EventKind.COMMAND if parsed else EventKind.MESSAGE,
        event_id=f"{event.event_id}:run",
        command=parsed[0] if parsed else None,
        text=parsed[1] if parsed else prompt,
        action_id=None,
        action_value=None,
        args={},
    )
    await ctx.services.dispatch(derived, ctx.responder)


def register(router: Router) -> None:
    router.command(
        "help", "cmd_help", options=[Option("command", OptionType.TEXT, "cmd_help_command")],
        examples=("/help", "/help ping"),
    )(help_command)
    router.command("ping", "cmd_ping")(ping)
    router.command("whoami", "cmd_whoami")(whoami)
    router.command("reset", "cmd_reset")(reset)
    router.on(EventKind.MESSAGE)(plain_message)
    router.on(EventKind.FILE)(attachment_received)
    router.on(EventKind.IMAGE)(attachment_received)
    router.on(EventKind.VOICE)(attachment_received)
    router.action("suggest")(suggestion_clicked)
