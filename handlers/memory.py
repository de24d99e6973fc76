"""Conversation memory, as the course teaches it: buffer window, summary, summary buffer, entities.

`build_messages` turns stored history into the prompt for one turn; `remember` updates the
strategy's state after the turn (a running summary, or facts about named things). The prompt is
built stably (same system text, earlier turns unchanged) so llama.cpp can reuse its cached prefix.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from bot.context import HandlerContext
from bot.events import IncomingEvent
from bot.router import Option, OptionType, Router
from engines.llm import ChatRequest, ChatResult
from engines.tokens import estimate_tokens
from handlers.chat_config import MEMORY_STRATEGIES, resolve, set_channel
from storage.repositories.memory import FactRow, Summary
from storage.repositories.messages import MessageRow

log = logging.getLogger(__name__)

SUMMARY_PROMPT = (
    "Summarize these chat lines in one or two short sentences, in the third person. "
    "Keep every name, team, number and decision."
)
CONDENSE_PROMPT = (
    "Shorten this summary of a conversation to at most 120 words. Keep every name, team, number and decision."
)
ENTITY_PROMPT = (
    "Extract facts about named people, projects, teams and things from the user's message. "
    'Answer with JSON only: {"facts": [{"entity": "<name>", "fact": "<short fact>"}]}. '
    'If there are none, answer {"facts": []}.'
)
HISTORY_LIMIT = 200  # messages read back per turn at most


@dataclass(frozen=True)
class MemoryState:
    strategy: str
    history: list[MessageRow]  # recent messages, oldest first (the new user message excluded)
    summary: Summary
    facts: list[FactRow]


def _as_message(row: MessageRow) -> dict[str, str]:
    return {"role": row.role, "content": row.content}


def window(history: list[MessageRow], turns: int) -> list[MessageRow]:
    """The last `turns` exchanges (a user message and what followed it)."""
    starts = [i for i, m in enumerate(history) if m.role == "user"]
    if len(starts) <= turns:
        return history
    return history[starts[-turns]:]


def recalled(facts: list[FactRow], text: str, history: list[MessageRow]) -> list[FactRow]:
    """Facts about entities the new message names; when it speaks of "I"/"my", the latest facts too
    (they are mostly about the speaker)."""
    lowered = text.lower()
    latest = facts[-20:] if _mentions_self(lowered) else []
    return [f for f in facts if f.entity.lower() in lowered or f in latest]


def _mentions_self(text: str) -> bool:
    return bool(re.search(r"\b(i|me|my|mine)\b|我", text))


def build_messages(system: str, state: MemoryState, user_text: str, window_turns: int) -> list[dict[str, Any]]:
    """The prompt for one turn under `state.strategy`."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    if state.strategy == "buffer_window":
        messages += [_as_message(m) for m in window(state.history, window_turns)]
    elif state.strategy == "summary":
        if state.summary.text:
            messages.append({"role": "system", "content": f"Summary of the conversation so far:\n{state.summary.text}"})
    elif state.strategy == "summary_buffer":
        if state.summary.text:
            messages.append({"role": "system", "content": f"Summary of the conversation so far:\n{state.summary.text}"})
        messages += [_as_message(m) for m in state.history if m.id > state.summary.upto]
    elif state.strategy == "entity":
        known = recalled(state.facts, user_text, state.history)
        if known:
            lines = "\n".join(f"- {f.entity}: {f.fact}" for f in known)
            messages.append({"role": "system", "content": f"What you know about things mentioned:\n{lines}"})
        messages += [_as_message(m) for m in window(state.history, window_turns)]
    messages.append({"role": "user", "content": user_text})
    return messages


async def load_state(ctx: HandlerContext, strategy: str, conversation_id: int, before_id: int) -> MemoryState:
    """History (excluding the turn's own user message `before_id`), summary and facts."""
    history = [m for m in await ctx.store.messages.recent(conversation_id, HISTORY_LIMIT) if m.id < before_id]
    summary = await ctx.store.memory.summary(conversation_id)
    facts: list[FactRow] = []
    if strategy == "entity" and ctx.identity is not None:
        facts = await ctx.store.memory.facts(ctx.identity.workspace_pk, conversation_id)
    return MemoryState(strategy, history, summary, facts)


async def _complete(ctx: HandlerContext, messages: list[dict[str, Any]], json_mode: bool = False) -> ChatResult:
    request = ChatRequest(messages=messages, model=ctx.settings.chat.model, temperature=0.0,
                          max_tokens=300, json_mode=json_mode)
    result: ChatResult = await ctx.pool.run(ctx.settings.chat.engine, request)
    return result


def _lines(rows: list[MessageRow]) -> str:
    return "\n".join(f"{'User' if m.role == 'user' else 'Assistant'}: {m.content}" for m in rows)


async def summarize(ctx: HandlerContext, previous: str, rows: list[MessageRow]) -> tuple[str, list[ChatResult]]:
    """The summary with `rows` folded in.

    New lines become a short note appended to the summary, and the whole is condensed only when it
    grows past `summary_tokens`: small local models keep facts far better this way than when asked
    to rewrite the whole summary every turn.
    """
    note = await _complete(ctx, [{"role": "system", "content": SUMMARY_PROMPT},
                                 {"role": "user", "content": _lines(rows)}])
    calls = [note]
    combined = f"{previous}\n{note.text.strip()}".strip()
    if estimate_tokens(combined) > ctx.settings.chat.summary_tokens:
        condensed = await _complete(ctx, [{"role": "system", "content": CONDENSE_PROMPT},
                                          {"role": "user", "content": combined}])
        calls.append(condensed)
        combined = condensed.text.strip() or combined
    return combined, calls


def parse_facts(text: str) -> list[tuple[str, str]]:
    """(entity, fact) pairs from the model's JSON; anything malformed is skipped."""
    match = re.search(r"\{.*\}|\[.*\]", text, re.S)
    if not match:
        return []
    try:
        data = json.loads(match.group(0))
    except ValueError:
        return []
    items = data.get("facts", []) if isinstance(data, dict) else data
    pairs = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and isinstance(item.get("entity"), str) and isinstance(item.get("fact"), str):
            entity, fact = item["entity"].strip(), item["fact"].strip()
            if entity and fact and len(entity) <= 80 and len(fact) <= 400:
                pairs.append((entity, fact))
    return pairs


async def remember(ctx: HandlerContext, strategy: str, conversation_id: int, user_text: str) -> list[ChatResult]:
    """Update the strategy's state after a turn; returns the model calls made (for the usage ledger)."""
    calls: list[ChatResult] = []
    chat = ctx.settings.chat
    if strategy == "summary":
        summary = await ctx.store.memory.summary(conversation_id)
        new_rows = await ctx.store.messages.after(conversation_id, summary.upto)
        if new_rows:
            text, made = await summarize(ctx, summary.text, new_rows)
            calls += made
            await ctx.store.memory.set_summary(conversation_id, text, new_rows[-1].id)
    elif strategy == "summary_buffer":
        summary = await ctx.store.memory.summary(conversation_id)
        buffer = await ctx.store.messages.after(conversation_id, summary.upto)
        total = sum(m.token_count for m in buffer)
        overflow: list[MessageRow] = []
        while buffer and total > chat.buffer_tokens:
            # fold whole exchanges: a user message and the replies after it
            take = 1 + next((i for i, m in enumerate(buffer[1:]) if m.role == "user"), len(buffer) - 1)
            for m in buffer[:take]:
                total -= m.token_count
            overflow += buffer[:take]
            buffer = buffer[take:]
        if overflow:
            text, made = await summarize(ctx, summary.text, overflow)
            calls += made
            await ctx.store.memory.set_summary(conversation_id, text, overflow[-1].id)
    elif strategy == "entity" and ctx.identity is not None:
        result = await _complete(ctx, [{"role": "system", "content": ENTITY_PROMPT},
                                       {"role": "user", "content": user_text}], json_mode=True)
        calls.append(result)
        scope_conversation = conversation_id if chat.entity_scope == "conversation" else None
        for entity, fact in parse_facts(result.text):
            await ctx.store.memory.add_fact(ctx.identity.workspace_pk, scope_conversation, entity, fact)
    return calls


# -- commands ---------------------------------------------------------------------------------
async def memory_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    assert ctx.identity is not None
    conversation_id = await ctx.store.conversations.current(ctx.identity, event.conversation_key)
    async with ctx.services.locks.get(conversation_id):  # after any turn still updating memory
        await _memory(event, ctx, conversation_id)


async def _memory(event: IncomingEvent, ctx: HandlerContext, conversation_id: int) -> None:
    assert ctx.identity is not None
    mode = str(ctx.state["args"].get("mode", "show"))
    if mode in MEMORY_STRATEGIES:
        await set_channel(ctx, event, "memory", mode)
        await ctx.responder.send(ctx.t("memory_set", strategy=ctx.t(f"memory_{mode}")))
        return
    if mode == "facts":
        facts = await ctx.store.memory.facts(ctx.identity.workspace_pk, conversation_id)
        if not facts:
            await ctx.responder.send(ctx.t("memory_no_facts"))
            return
        lines = [ctx.t("memory_facts_title")] + [f"• #{f.id} *{f.entity}*: {f.fact}" for f in facts]
        await ctx.responder.send("\n".join(lines))
        return
    config = await resolve(ctx)
    summary = await ctx.store.memory.summary(conversation_id)
    count = await ctx.store.messages.count(conversation_id)
    lines = [ctx.t("memory_show", strategy=ctx.t(f"memory_{config.memory}"), messages=count)]
    if summary.text:
        lines.append(ctx.t("memory_summary_text", summary=summary.text))
    await ctx.responder.send("\n".join(lines))


async def forget_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    assert ctx.identity is not None
    what = str(ctx.state["args"]["what"])
    conversation_id = await ctx.store.conversations.current(ctx.identity, event.conversation_key)
    async with ctx.services.locks.get(conversation_id):  # not while a turn is still learning facts
        removed = await ctx.store.memory.forget(ctx.identity.workspace_pk, what)
    if removed:
        await ctx.store.audit.log(f"{event.platform}:{event.user_id}", "memory.forget", {"what": what},
                                  workspace_pk=ctx.identity.workspace_pk)
    await ctx.responder.send(ctx.t("forgot", count=removed, what=what) if removed else ctx.t("forgot_none", what=what))


def register(router: Router) -> None:
    router.command(
        "memory", "cmd_memory",
        options=[Option("mode", OptionType.TEXT, "opt_memory_mode", choices=("show", "facts", *MEMORY_STRATEGIES))],
        examples=("/memory", "/memory summary_buffer", "/memory facts"),
    )(memory_command)
    router.command("forget", "cmd_forget", options=[Option("what", OptionType.TEXT, "opt_forget", required=True)],
                   examples=("/forget 12", "/forget Lin"))(forget_command)
