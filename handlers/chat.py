"""Chat with memory: every plain message becomes a streamed answer from the chat engine.

One turn: check the budget, store the user's message, build the prompt from the channel's memory
strategy and controls, stream the answer through the responder's throttled edits, store it with
feedback buttons, write the usage ledger, then update memory. Turns of one conversation run in
order; different conversations run at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bot.context import HandlerContext
from bot.errors import EngineError, UserFacingError
from bot.events import EventKind, IncomingEvent
from bot.responder import Button, StreamContext
from bot.router import Router
from engines.llm import ChatRequest, ChatResult, TokenizeRequest
from engines.tokens import estimate_tokens
from handlers.chat_config import ChatConfig, resolve
from handlers.memory import build_messages, load_state, remember
from handlers.moderation import check_quota
from handlers.pii import Restorer, redact_messages
from handlers.usage import check_budget, record_usage

MAX_BIAS_ENTRIES = 300  # OpenAI's limit for logit_bias


async def count_tokens(ctx: HandlerContext, text: str) -> int:
    tokens = await ctx.pool.run(ctx.settings.chat.engine, TokenizeRequest(text))
    return len(tokens) if tokens is not None else estimate_tokens(text)


async def logit_bias(ctx: HandlerContext, words: tuple[str, ...]) -> dict[int, int] | None:
    """Every token of each banned word (as written, capitalised, after a space) biased to -100."""
    if not words:
        return None
    bias: dict[int, int] = {}
    for word in words:
        for variant in dict.fromkeys((word, f" {word}", word.capitalize(), f" {word.capitalize()}")):
            ids = await ctx.pool.run(ctx.settings.chat.engine, TokenizeRequest(variant))
            if ids is None:
                return None
            for token in ids:
                if len(bias) < MAX_BIAS_ENTRIES:
                    bias[int(token)] = -100
    return bias


def route_model(config: ChatConfig, text: str, ctx: HandlerContext) -> str | None:
    """Short, simple messages go to the cheaper model when one is configured."""
    chat = ctx.settings.chat
    simple = len(text) <= chat.cheap_max_chars and "```" not in text and "\n" not in text
    if chat.cheap_model and simple and config.sources.get("model", "default") == "default":
        return chat.cheap_model
    return config.model


def redact_for(ctx: HandlerContext, engine: str,
               messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Restorer | None]:
    """With `[privacy] redact_pii`, the messages with PII masked when they go to an external provider,
    and a restorer for the reply; unchanged (and None) otherwise."""
    privacy = ctx.settings.privacy
    spec = ctx.settings.engines.get(engine)
    local = spec is not None and spec.options.get("provider", "local") == "local"
    if not privacy.redact_pii or (local and not privacy.local_too):
        return messages, None
    redacted, mapping = redact_messages(messages, privacy.kinds)
    if mapping:
        ctx.log.info("masked %d PII item(s) before calling %s", len(mapping), engine)
    return redacted, Restorer(mapping, privacy.restore_kinds)


def feedback_buttons(message_id: int) -> list[Button]:
    return [Button("👍", "feedback", f"up:{message_id}"), Button("👎", "feedback", f"down:{message_id}")]


async def chat_turn(event: IncomingEvent, ctx: HandlerContext) -> None:
    text = event.text.strip()
    if not text:
        raise UserFacingError("empty_message")
    assert ctx.identity is not None
    chat = ctx.settings.chat
    notices = []
    if len(text) > chat.max_input_chars:
        notices.append(ctx.t("message_truncated", length=len(text), limit=chat.max_input_chars))
        text = text[: chat.max_input_chars]
    await check_quota(ctx, event, "messages")
    config = await resolve(ctx)
    if config.agent_mode and event.kind == EventKind.MESSAGE:
        from handlers.agent import run_agent  # the agent builds on chat, not the reverse

        await run_agent(ctx, event, text)
        return
    if config.docs_mode and event.kind == EventKind.MESSAGE:
        from handlers.docs import docs_mode_message  # documents build on chat, not the reverse

        await docs_mode_message(event, ctx)
        return
    conversation = await ctx.store.conversations.current(ctx.identity, event.conversation_key)
    async with ctx.services.locks.get(conversation):
        warning = await check_budget(ctx)  # inside the lock: the previous turn's cost is already counted
        # The user's words are kept first, so nothing is lost if the model then fails.
        meta = {"ref": event.message_ref, "channel": event.channel_id} if event.message_ref else None
        user_message = await ctx.store.messages.add(conversation, "user", text, await count_tokens(ctx, text),
                                                    meta=meta)
        state = await load_state(ctx, config.memory, conversation, user_message)
        bias = await logit_bias(ctx, config.ban_words)
        if config.ban_words and bias is None:
            notices.append(ctx.t("ban_words_unsupported"))
        messages, restorer = redact_for(ctx, config.engine, build_messages(config.system, state, text,
                                                                           chat.window_turns))
        request = ChatRequest(
            messages=messages,
            model=route_model(config, text, ctx), temperature=config.temperature, max_tokens=config.max_tokens,
            seed=config.seed, json_mode=config.json_mode, logit_bias=bias,
        )
        for notice in notices:
            await ctx.responder.send(notice)
        await ctx.responder.typing()
        result = await stream_answer(ctx, config.engine, request, conversation, event.event_id, restorer)
        await record_usage(ctx, result, engine=config.engine)
        if config.answer_with_voice and result.text.strip():
            from handlers.speech import speak, upload_speech  # speech builds on chat, not the reverse

            await upload_speech(ctx, await speak(ctx, event, result.text))
        if config.answer_with_video and result.text.strip():
            from handlers.presenter import render, upload_video  # the presenter builds on chat, not the reverse

            text = result.text[: ctx.settings.presenter.max_chars]
            await upload_video(ctx, await render(ctx, event, text), text)
        if warning:
            await ctx.responder.send(warning)
        for call in await remember(ctx, config.memory, conversation, text):
            await record_usage(ctx, call)


async def stream_into(ctx: HandlerContext, writer: StreamContext, engine: str, request: ChatRequest, event_id: str,
                      restorer: Restorer | None = None) -> ChatResult | None:
    """Stream the chat engine's answer into `writer`, with masked PII put back; the final result (its text as
    shown), or None when the engine ended without one."""
    result: ChatResult | None = None
    async for chunk in ctx.pool.stream(engine, request, event_id=event_id):
        if isinstance(chunk, ChatResult):
            result = chunk
        else:
            await writer.write(restorer.feed(chunk) if restorer else chunk)
    if restorer is not None:
        await writer.write(restorer.flush())
        if result is not None:
            result = dataclasses.replace(result, text=writer.text)
    return result


async def stream_answer(
    ctx: HandlerContext, engine: str, request: ChatRequest, conversation: int, event_id: str,
    restorer: Restorer | None = None,
) -> ChatResult:
    """Stream the answer into one edited message, store it, and put feedback buttons under it."""
    async with ctx.responder.stream() as writer:
        result = await stream_into(ctx, writer, engine, request, event_id, restorer)
        if result is None:
            raise EngineError("the chat engine ended without an answer")
        if not result.text.strip():
            await writer.write(ctx.t("empty_answer"))
        tokens = result.tokens_out or estimate_tokens(result.text)
        message_id = await ctx.store.messages.add(
            conversation, "assistant", result.text, tokens, meta={"model": result.model}
        )
        await writer.set_buttons(feedback_buttons(message_id))
    return result


def register(router: Router) -> None:
    router.on(EventKind.MESSAGE)(chat_turn)
