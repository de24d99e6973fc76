"""Summaries of long text with the chat engine: map over pieces, then reduce the partial summaries
level by level (a tree) until one is left. Used by /summarize (documents) and /summarize-audio."""

from __future__ import annotations

import re

from bot.context import HandlerContext
from engines.llm import ChatRequest, ChatResult
from handlers.usage import record_usage

_SENTENCE_END = re.compile(r"(?<=[。！？!?])|(?<=[.;])\s+|\n+")


def pieces(text: str, size: int) -> list[str]:
    """`text` cut at sentence ends into pieces of at most about `size` characters."""
    out, current = [], ""
    for sentence in _SENTENCE_END.split(text):
        sentence = sentence.strip()
        if not sentence:
            continue
        if current and len(current) + len(sentence) + 1 > size:
            out.append(current)
            current = ""
        current = f"{current} {sentence}" if current else sentence
        while len(current) > size:  # one very long sentence
            out.append(current[:size])
            current = current[size:]
    if current:
        out.append(current)
    return out


async def chat_once(ctx: HandlerContext, messages: list[dict[str, str]], *, max_tokens: int = 400,
                    temperature: float = 0.2) -> ChatResult:
    """One non-streamed answer from the configured chat engine, with its usage recorded."""
    result: ChatResult = await ctx.pool.run(ctx.settings.chat.engine, ChatRequest(
        messages=messages, model=ctx.settings.chat.model, temperature=temperature, max_tokens=max_tokens))
    await record_usage(ctx, result)
    return result


async def ask_llm(ctx: HandlerContext, system: str, text: str, max_tokens: int = 400) -> ChatResult:
    """`chat_once` with a system prompt and one user message."""
    return await chat_once(ctx, [{"role": "system", "content": system}, {"role": "user", "content": text}],
                           max_tokens=max_tokens)


async def tree_summarize(ctx: HandlerContext, text: str, map_prompt: str, reduce_prompt: str, size: int) -> str:
    """A summary of `text`: pieces summarized with `map_prompt`, then combined with `reduce_prompt`
    in groups that fit `size`, level by level, reporting progress as it goes."""
    level = pieces(text, size)
    if len(level) > 1:
        summaries = []
        for i, piece in enumerate(level):
            summaries.append((await ask_llm(ctx, map_prompt, piece)).text.strip())
            await ctx.responder.progress((i + 1) / (len(level) + 1), ctx.t("summarizing", done=i + 1, total=len(level)))
        level = summaries
    while True:
        groups: list[list[str]] = [[]]
        for summary in level:
            if groups[-1] and sum(map(len, groups[-1])) + len(summary) > size:
                groups.append([])
            groups[-1].append(summary)
        combined = [(await ask_llm(ctx, reduce_prompt, "\n\n".join(group))).text.strip() for group in groups]
        if len(combined) == 1 or len(combined) >= len(level):
            return "\n\n".join(combined)
        level = combined
