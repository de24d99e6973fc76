"""The digital presenter: `/present` answers (or reads out) a text as a short video of a face speaking it.

Text -> (the chat model writes the answer, unless `as_is`) -> moderation of the text -> speech (the
speech engine, with phoneme timings when it has them) -> the presenter engine turns the portrait and
the audio into an MP4 under the platform's upload limit -> uploaded as the reply. `/presenter portrait`
sets the workspace's portrait (checked by rendering a short clip), `/presenter video on` makes a
channel's chat answers come with a video too.
"""

from __future__ import annotations

import logging

import numpy as np

from bot.context import HandlerContext
from bot.errors import UserFacingError
from bot.events import IncomingEvent
from bot.responder import ReplyBlocked
from bot.router import Option, OptionType, Router
from engines.audio import wav_bytes
from engines.presenter import PresentRequest, Video
from handlers.chat_config import resolve, set_channel
from handlers.moderation import check_quota
from handlers.speech import speak
from handlers.summarize import ask_llm
from handlers.usage import record

log = logging.getLogger(__name__)
PORTRAIT_KEY = "presenter_portrait"  # workspace setting: the blob id of the portrait
ANSWER_PROMPT = ("Answer the user's question as a presenter speaking to camera: plain sentences, no lists, no "
                 "markdown, about {words} words, in the language of the question.")


async def portrait(ctx: HandlerContext) -> bytes | None:
    """The workspace's portrait, or None for the bundled default."""
    assert ctx.identity is not None
    blob_id = (await ctx.store.scoped.get("workspace", ctx.identity.workspace_pk)).get(PORTRAIT_KEY)
    if not blob_id:
        return None
    blob = await ctx.store.blobs.get(int(blob_id))
    return None if blob is None else await ctx.store.blobs.read(blob.id)


async def render(ctx: HandlerContext, event: IncomingEvent, text: str) -> Video:
    """Speak `text` and render it, within the sender's video quota."""
    settings = ctx.settings.presenter
    await check_quota(ctx, event, "video_seconds")
    speech = await speak(ctx, event, text)
    limit = settings.max_video_mb.get(event.platform, min(settings.max_video_mb.values(), default=8.0))
    request = PresentRequest(audio=speech.audio, portrait=await portrait(ctx), text=text, phonemes=speech.phonemes,
                             max_bytes=int(limit * 2**20), fps=settings.fps, size=settings.size)
    video: Video = await ctx.pool.run(settings.engine, request, progress=ctx.responder.progress)
    await record(ctx, settings.engine, model=video.renderer, seconds=video.duration_s)
    return video


async def upload_video(ctx: HandlerContext, video: Video, text: str) -> None:
    caption = text if len(text) <= 300 else text[:300] + "…"
    if video.note:
        caption += "\n" + ctx.t("presenter_note", note=video.note)
    await ctx.responder.upload(video.data, "presenter.mp4", video.mime, caption=caption)


async def present_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    args = ctx.state["args"]
    text = str(args.get("text") or "").strip()
    if not text:
        raise UserFacingError("present_empty")
    settings = ctx.settings.presenter
    if not args.get("as_is"):
        await ctx.responder.progress(0.02, ctx.t("present_writing"))
        text = (await ask_llm(ctx, ANSWER_PROMPT.format(words=settings.answer_words), text, max_tokens=300)).text
        text = text.strip()
        if not text:
            raise UserFacingError("empty_answer")
        guard = getattr(ctx.responder, "guard", None)  # the model's words are a reply: checked like one
        if guard is not None and await guard(text) is not None:
            raise ReplyBlocked("reply_blocked")
    if len(text) > settings.max_chars:
        await ctx.responder.send(ctx.t("present_cut", limit=settings.max_chars))
        head = text[:settings.max_chars]
        text = head.rsplit(" ", 1)[0] if " " in head else head
    await upload_video(ctx, await render(ctx, event, text), text)


async def presenter_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    assert ctx.identity is not None
    args = ctx.state["args"]
    action = str(args.get("action") or "video")
    if action == "portrait":
        await set_portrait(event, ctx)
        return
    value = str(args.get("value") or "").strip().lower()
    if value:
        await set_channel(ctx, event, "answer_with_video", value in {"on", "yes", "true", "1", "开"})
    config = await resolve(ctx)
    await ctx.responder.send(ctx.t("presenter_video_now", state=ctx.t("yes" if config.answer_with_video else "no")))


async def set_portrait(event: IncomingEvent, ctx: HandlerContext) -> None:
    assert ctx.identity is not None
    if ctx.identity.role != "admin":
        raise UserFacingError("forbidden", command="presenter portrait")
    attachment = ctx.state["args"].get("file") or next(iter(event.attachments), None)
    if attachment is None:
        raise UserFacingError("presenter_portrait_missing")
    data = await attachment.read(ctx.settings.limits.max_upload_bytes)
    # A short silent clip proves the portrait works (one face, big enough) before it is kept.
    silence = wav_bytes(np.zeros(8000, dtype=np.float32))
    await ctx.pool.run(ctx.settings.presenter.engine,
                       PresentRequest(audio=silence, portrait=data, fps=10, size=128, max_bytes=2**30))
    blob = await ctx.store.blobs.put(ctx.identity.workspace_pk, attachment.name, attachment.mime, data)
    actor = f"{event.platform}:{event.user_id}"
    await ctx.store.scoped.set("workspace", ctx.identity.workspace_pk, PORTRAIT_KEY, blob.id, actor)
    await ctx.store.audit.log(actor, "presenter.portrait", {"blob": blob.id}, workspace_pk=ctx.identity.workspace_pk)
    await ctx.responder.send(ctx.t("presenter_portrait_set", name=attachment.name))


def register(router: Router) -> None:
    router.command(
        "present", "cmd_present",
        options=[Option("text", OptionType.TEXT, "opt_present_text", required=True),
                 Option("as_is", OptionType.BOOLEAN, "opt_present_as_is")],
        examples=("/present What is our refund policy?", "/present 大家好，欢迎加入团队 as_is:yes"))(present_command)
    router.command(
        "presenter", "cmd_presenter",
        options=[Option("action", OptionType.TEXT, "opt_presenter_action", choices=("video", "portrait")),
                 Option("value", OptionType.TEXT, "opt_presenter_value"),
                 Option("file", OptionType.ATTACHMENT, "opt_presenter_file")],
        examples=("/presenter video on", "/presenter portrait (attach a photo)"))(presenter_command)
