"""Feedback on answers (👍/👎), export of the well-rated conversations as fine-tuning data,
and `/finetune`, which submits that data to OpenAI's fine-tuning API and reports progress."""

from __future__ import annotations

import asyncio
import json

from bot.context import HandlerContext
from bot.errors import UserFacingError
from bot.events import IncomingEvent
from bot.router import Option, OptionType, Router
from engines.finetune import FineTuneJob, FineTuneStart, FineTuneStatus
from handlers.chat_config import resolve

FINAL = {"succeeded", "failed", "cancelled"}


async def rate(event: IncomingEvent, ctx: HandlerContext) -> None:
    direction, _, raw_id = (event.action_value or "").partition(":")
    if direction not in ("up", "down") or not raw_id.isdigit():
        raise UserFacingError("unknown_action")
    rating = 1 if direction == "up" else -1
    # Only answers in the clicker's own workspace can be rated (a button value can be forged).
    if ctx.identity is None or await ctx.store.messages.workspace_of(int(raw_id)) != ctx.identity.workspace_pk:
        raise UserFacingError("unknown_action")
    rater = f"{event.platform}:{event.user_id}"
    if not await ctx.store.messages.update_meta(int(raw_id), rating=rating, rated_by=rater):
        raise UserFacingError("unknown_action")
    await ctx.responder.send(ctx.t("feedback_thanks_up" if rating > 0 else "feedback_thanks_down"))


async def training_jsonl(ctx: HandlerContext) -> tuple[bytes, int]:
    """Each up-rated answer with the conversation before it, in OpenAI's chat fine-tuning format."""
    config = await resolve(ctx)
    lines = []
    for answer in await ctx.store.messages.rated(1):
        history = await ctx.store.messages.upto(answer.conversation_id, answer.id)
        turns = [{"role": m.role, "content": m.content} for m in history[-20:] if m.role in ("user", "assistant")]
        while turns and turns[0]["role"] != "user":
            turns.pop(0)
        if turns:
            messages = [{"role": "system", "content": config.system}, *turns]
            lines.append(json.dumps({"messages": messages}, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode() if lines else b"", len(lines)


async def feedback_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    data, count = await training_jsonl(ctx)
    if not count:
        raise UserFacingError("feedback_nothing")
    await ctx.responder.upload(data, "finetune.jsonl", "application/jsonl",
                               caption=ctx.t("feedback_exported", count=count))


def describe(ctx: HandlerContext, job: FineTuneJob) -> str:
    if job.status == "succeeded":
        return ctx.t("finetune_done", job=job.id, model=job.fine_tuned_model or "?", tokens=job.trained_tokens or 0)
    if job.status in ("failed", "cancelled"):
        return ctx.t("finetune_failed", job=job.id, status=job.status, error=job.error or "-")
    return ctx.t("finetune_status", job=job.id, status=job.status)


async def finetune_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    args = ctx.state["args"]
    engine = ctx.settings.chat.finetune_engine
    if args["action"] == "status":
        if not args.get("job"):
            raise UserFacingError("missing_option", command="finetune", option="job", description="")
        job: FineTuneJob = await ctx.pool.run(engine, FineTuneStatus(str(args["job"])))
        await ctx.responder.send(describe(ctx, job))
        return
    data, count = await training_jsonl(ctx)
    if not count:
        raise UserFacingError("feedback_nothing")
    job = await ctx.pool.run(engine, FineTuneStart(data, ctx.settings.chat.finetune_model, suffix="teambot"))
    await ctx.store.audit.log(f"{event.platform}:{event.user_id}", "finetune.start", {"job": job.id, "examples": count},
                              workspace_pk=ctx.identity.workspace_pk if ctx.identity else None)
    await ctx.responder.send(ctx.t("finetune_started", job=job.id, count=count, model=job.model))
    # Follow the job in the background and report as it moves (tracked: shutdown waits for it).
    ctx.services.tasks.spawn(follow(ctx, job), name=f"finetune:{job.id}")


async def follow(ctx: HandlerContext, job: FineTuneJob) -> None:
    interval = ctx.settings.chat.finetune_poll_s
    steps = {"validating_files": 0.2, "queued": 0.3, "running": 0.6}
    last = job.status
    while job.status not in FINAL and not ctx.services.tasks.closing:
        await asyncio.sleep(interval)
        job = await ctx.pool.run(ctx.settings.chat.finetune_engine, FineTuneStatus(job.id))
        if job.status != last:
            last = job.status
            await ctx.responder.progress(steps.get(job.status, 1.0), job.status)
    if job.status in FINAL:
        await ctx.responder.send(describe(ctx, job))


def register(router: Router) -> None:
    router.action("feedback")(rate)
    router.command(
        "feedback", "cmd_feedback",
        options=[Option("action", OptionType.TEXT, "opt_feedback_action", required=True, choices=("export",))],
        examples=("/feedback export",),
    )(feedback_command)
    router.command(
        "finetune", "cmd_finetune", role="admin",
        options=[Option("action", OptionType.TEXT, "opt_finetune_action", required=True, choices=("start", "status")),
                 Option("job", OptionType.TEXT, "opt_finetune_job")],
        examples=("/finetune start", "/finetune status ftjob-abc"),
    )(finetune_command)
