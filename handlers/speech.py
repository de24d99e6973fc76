"""Voice in and voice out: voice clips transcribed (and, by channel setting, answered as if typed),
`/transcribe` with SRT or VTT, `/summarize-audio` with a map-reduce summary and action items, and
`/speak`; a channel can also have chat answers spoken."""

from __future__ import annotations

import dataclasses

from bot.context import HandlerContext
from bot.errors import UserFacingError
from bot.events import Attachment, EventKind, IncomingEvent
from bot.moderation import enforce
from bot.router import Option, OptionType, Router
from engines.stt import TranscribeRequest, Transcript
from engines.tts import SpeakRequest, Speech
from handlers.chat import chat_turn
from handlers.chat_config import resolve, set_channel
from handlers.moderation import check_quota
from handlers.summarize import tree_summarize
from handlers.usage import record

AUDIO_FORMAT = {"discord": "ogg", "slack": "mp3", "web": "mp3"}
MAP_PROMPT = "Summarize this part of a meeting transcript in a few bullet points. Keep names, numbers and decisions."
REDUCE_PROMPT = (
    "Combine these partial summaries of one recording into a short summary, then a list headed 'Action items' "
    "with who does what (or 'none'). Answer in the language of the transcript."
)


def _audio(event: IncomingEvent, ctx: HandlerContext) -> Attachment:
    args = ctx.state.get("args", {})
    attachment = args.get("file") or next(iter(event.attachments), None)
    if attachment is None:
        raise UserFacingError("audio_missing")
    return attachment


async def transcribe(ctx: HandlerContext, event: IncomingEvent, attachment: Attachment, *,
                     timestamps: bool = True) -> Transcript:
    """The recording's transcript, within the sender's audio quota, checked by moderation."""
    await check_quota(ctx, event, "audio_minutes")
    data = await attachment.read(ctx.settings.limits.max_upload_bytes)
    request = TranscribeRequest(audio=data, prompt=ctx.settings.speech.transcript_prompt, timestamps=timestamps,
                                max_seconds=ctx.settings.speech.max_audio_seconds)
    engine = ctx.settings.speech.stt_engine
    transcript: Transcript = await ctx.pool.run(engine, request, progress=ctx.responder.progress)
    await record(ctx, engine, seconds=transcript.duration_s)
    if not transcript.text.strip():
        raise UserFacingError("audio_silent", name=attachment.name)
    await enforce(ctx, event, transcript.text, "transcript")
    return transcript


async def speak(ctx: HandlerContext, event: IncomingEvent, text: str, voice: str | None = None) -> Speech:
    request = SpeakRequest(text=text, voice=voice,  # the engine detects the language from the text
                           format=AUDIO_FORMAT.get(event.platform, "mp3"))  # type: ignore[arg-type]
    speech: Speech = await ctx.pool.run(ctx.settings.speech.tts_engine, request)
    return speech


async def upload_speech(ctx: HandlerContext, speech: Speech, caption: str | None = None) -> None:
    note = ctx.t("speech_fallback", note=speech.fallback_note) if speech.fallback_note else None
    text = "\n".join(x for x in (caption, note) if x) or None
    await ctx.responder.upload(speech.audio, f"speech.{speech.format}", speech.mime, caption=text)


async def voice_clip(event: IncomingEvent, ctx: HandlerContext) -> None:
    """A voice clip: transcribed; in "converse" channels answered as if typed (and spoken when set)."""
    mode = (await resolve(ctx)).voice_mode
    if mode == "off":
        from handlers.core import attachment_received

        await attachment_received(event, ctx)
        return
    transcript = await transcribe(ctx, event, _audio(event, ctx), timestamps=False)
    await ctx.responder.send(ctx.t("heard", language=transcript.language, text=transcript.text.strip()))
    if mode == "converse":
        typed = dataclasses.replace(event, kind=EventKind.MESSAGE, text=transcript.text.strip(), attachments=())
        await chat_turn(typed, ctx)


async def transcribe_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    transcript = await transcribe(ctx, event, _audio(event, ctx))
    fmt = ctx.state["args"].get("format", "text")
    if fmt == "srt":
        await ctx.responder.upload(transcript.to_srt().encode(), "transcript.srt", "application/x-subrip",
                                   caption=ctx.t("transcript_caption", language=transcript.language))
    elif fmt == "vtt":
        await ctx.responder.upload(transcript.to_vtt().encode(), "transcript.vtt", "text/vtt",
                                   caption=ctx.t("transcript_caption", language=transcript.language))
    else:
        await ctx.responder.send(transcript.text.strip())


async def summarize_audio(event: IncomingEvent, ctx: HandlerContext) -> None:
    transcript = await transcribe(ctx, event, _audio(event, ctx))
    await ctx.responder.upload(transcript.text.encode(), "transcript.txt", "text/plain",
                               caption=ctx.t("transcript_caption", language=transcript.language))
    summary = await tree_summarize(ctx, transcript.text, MAP_PROMPT, REDUCE_PROMPT,
                                   ctx.settings.speech.summary_chunk_chars)
    await ctx.responder.send(ctx.t("audio_summary", minutes=round(transcript.duration_s / 60, 1),
                                   summary=summary))


async def speak_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    args = ctx.state["args"]
    speech = await speak(ctx, event, str(args["text"]), args.get("voice"))
    await upload_speech(ctx, speech)


async def voice_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    args = ctx.state["args"]
    if "mode" in args:
        await set_channel(ctx, event, "voice_mode", args["mode"])
    if "answer_with_voice" in args:
        await set_channel(ctx, event, "answer_with_voice", bool(args["answer_with_voice"]))
    config = await resolve(ctx)
    await ctx.responder.send(ctx.t("voice_settings", mode=config.voice_mode,
                                   spoken=ctx.t("yes" if config.answer_with_voice else "no")))


def register(router: Router) -> None:
    router.on(EventKind.VOICE)(voice_clip)
    file = Option("file", OptionType.ATTACHMENT, "opt_audio_file", required=True)
    router.command("transcribe", "cmd_transcribe",
                   options=[file, Option("format", OptionType.TEXT, "opt_transcript_format",
                                         choices=("text", "srt", "vtt"))],
                   examples=("/transcribe (attach a recording)", "/transcribe format:srt"))(transcribe_command)
    router.command("summarize-audio", "cmd_summarize_audio", options=[file],
                   examples=("/summarize-audio (attach a meeting recording)",))(summarize_audio)
    router.command("speak", "cmd_speak",
                   options=[Option("text", OptionType.TEXT, "opt_speak_text", required=True),
                            Option("voice", OptionType.TEXT, "opt_voice")],
                   examples=("/speak Hello team", "/speak 大家好"))(speak_command)
    router.command("voice", "cmd_voice",
                   options=[Option("mode", OptionType.TEXT, "opt_voice_mode",
                                   choices=("transcribe", "converse", "off")),
                            Option("answer_with_voice", OptionType.BOOLEAN, "opt_answer_with_voice")],
                   examples=("/voice converse", "/voice answer_with_voice:yes"))(voice_command)

