"""The agent: the chat model plans and calls the bot's own tools over several steps (Visual ChatGPT style).

`/agent <request>` runs one request; `/agent on` makes every message in the channel go to the agent. Each
step asks the chat engine with the tools declared in `handlers.agent_tools`; tool calls come back as
`tool_calls` (OpenAI, vLLM) or as JSON in the text (the bundled local model; `engines.llm` parses both).
Each call is validated, announced, run through the same code as its command, and its result posted as it
completes; the result text goes back to the model for the next step. Bounds: `[agent] max_steps` model calls
and `max_seconds`; a repeated identical call is a loop and stops the run; arguments that do not validate are
explained to the model, which may retry once; a tool that fails is reported and the model may recover.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from bot.context import HandlerContext
from bot.errors import EngineError, UserFacingError
from bot.events import IncomingEvent
from bot.router import Option, OptionType, Router
from engines.llm import ChatRequest, ChatResult
from engines.tokens import estimate_tokens
from handlers.agent_tools import agent_tools, conversation_images, listing
from handlers.chat_config import resolve, set_channel
from handlers.tools import ToolBox
from handlers.usage import record_usage

log = logging.getLogger(__name__)

SYSTEM = """You are the team bot's agent. You do what the user asks by calling tools, one step at a time.
- Call a tool when it helps; when a step needs an earlier result (an image to edit), wait for that result.
- You do not know the current date or time, and you cannot draw or see images yourself: use the tools.
- Images are named by their number in the list below, "last" for the newest, or words from their prompt.
- Write image prompts in English and describe the whole picture (for an edit: the picture as it should look).
- When the work is done, or no tool is needed, answer the user briefly in their language without a tool call.
Images in this conversation: {images}
Earlier in this conversation: {history}
Current step limit: {steps} tool rounds."""
FINISH = ("Tools have already done the work for the user's request; their results are below. In one or two "
          "sentences, in the language of the request, tell the user the result. Do not call tools.")


def _brief(arguments: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items())
    return text if len(text) <= 160 else text[:159] + "…"


async def run_agent(ctx: HandlerContext, event: IncomingEvent, request: str) -> str | None:
    """One agent turn of the conversation: the request and the final answer are kept in its history (the last
    `[agent] history_messages` of it come with the next request); turns of one conversation run in order."""
    assert ctx.identity is not None
    conversation = await ctx.store.conversations.current(ctx.identity, event.conversation_key)
    async with ctx.services.locks.get(conversation):
        history = [{"role": m.role, "content": m.content}
                   for m in await ctx.store.messages.recent(conversation, ctx.settings.agent.history_messages)
                   if m.role in ("user", "assistant")]
        await ctx.store.messages.add(conversation, "user", request, estimate_tokens(request))
        answer = await plan_and_act(ctx, event, request, history)
        if answer is not None:  # a run stopped by a bound keeps no answer: the next request starts clean
            await ctx.store.messages.add(conversation, "assistant", answer, estimate_tokens(answer),
                                         meta={"agent": True})
    return answer


async def plan_and_act(ctx: HandlerContext, event: IncomingEvent, request: str,
                       history: list[dict[str, Any]]) -> str | None:
    """Plan and act until the model answers without a tool (its answer, as posted), or a bound is hit (None,
    after saying which)."""
    settings = ctx.settings.agent
    engine = settings.engine or (await resolve(ctx)).engine
    box = ToolBox(agent_tools(ctx, event))
    images = listing(await conversation_images(ctx))
    # Earlier turns go in as a summary line, not as chat turns: a small model given chat turns answers in kind
    # ("OK, I'll draw a cat") instead of calling the tool.
    earlier = " ".join(f"[{m['role']}] {m['content'][:300]}" for m in history) or "(nothing)"
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM.format(images=images, history=earlier, steps=settings.max_steps)},
        {"role": "user", "content": request},
    ]
    started = time.monotonic()
    seen: set[tuple[str, str]] = set()
    invalid: dict[str, int] = {}
    failures = 0
    done: list[tuple[str, str]] = []  # (tool, result) of each call that ran
    for step in range(1, settings.max_steps + 1):
        if time.monotonic() - started > settings.max_seconds:
            await _stop(ctx, "agent_time_limit", seconds=round(settings.max_seconds))
            return None
        await ctx.responder.typing()
        result: ChatResult = await ctx.pool.run(engine, ChatRequest(messages=messages, tools=box.specs(),
                                                                    max_tokens=settings.max_tokens,
                                                                    temperature=settings.temperature))
        await record_usage(ctx, result, engine=engine)
        log.info("agent step %d: %s", step, ", ".join(f"{c.name}({c.arguments})" for c in result.tool_calls)
                 or f"answer {result.text[:80]!r}")
        if not result.tool_calls:
            if looks_like_calls(result.text):  # calls a small model wrote but not as one object: wrap up instead
                return await finish(ctx, engine, request, done)
            answer = result.text.strip() or ctx.t("agent_done")
            await ctx.responder.send(answer)
            return answer
        if all((c.name, _canonical(c.arguments)) in seen for c in result.tool_calls):
            # Asking again for what it already has: a small model's way of not stopping. Answer from the results.
            return await finish(ctx, engine, request, done)
        messages.append({"role": "assistant", "content": result.text or None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in result.tool_calls]})
        for call in result.tool_calls:
            try:
                tool, arguments = box.prepare(call)
            except UserFacingError as e:
                invalid[call.name] = invalid.get(call.name, 0) + 1
                reason = ctx.t(e.key, **e.params)
                log.info("agent step %d: invalid call %s: %s", step, call.name, reason)
                if invalid[call.name] > settings.max_invalid_retries:
                    await _stop(ctx, "agent_bad_arguments", tool=call.name, reason=reason)
                    return None
                messages.append(_tool_message(call.id, f"Error: {reason} Fix the arguments and call it again."))
                continue
            signature = (tool.name, _canonical(call.arguments))
            if signature in seen:
                messages.append(_tool_message(call.id, "Already done: see the result above."))
                continue
            seen.add(signature)
            await announce(ctx, step, tool.name, arguments)
            try:
                output = await tool.run(arguments, ctx)
            except (UserFacingError, EngineError) as e:
                failures += 1
                reason = ctx.t(e.key, **e.params) if isinstance(e, UserFacingError) else str(e)[:300]
                await ctx.responder.send(ctx.t("agent_tool_failed", tool=tool.name, reason=reason))
                if failures > settings.max_failures:
                    await _stop(ctx, "agent_gave_up", tool=tool.name)
                    return None
                output = f"Error: {reason} Tell the user, or try another way."
            messages.append(_tool_message(call.id, output))
            done.append((tool.name, output))
    await _stop(ctx, "agent_step_limit", steps=settings.max_steps)
    return None


async def announce(ctx: HandlerContext, step: int, tool: str, arguments: dict[str, Any]) -> None:
    """Say which tool runs now; arguments the content policy would remove are not echoed (the tool itself
    then refuses them with its own message)."""
    brief = _brief(arguments)
    guard = getattr(ctx.responder, "guard", None)
    if guard is not None and await guard(brief) is not None:
        brief = "…"
    await ctx.responder.send(ctx.t("agent_calling", step=step, tool=tool, arguments=brief))


def _canonical(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments or "{}"), sort_keys=True, ensure_ascii=False)
    except ValueError:
        return arguments


def looks_like_calls(text: str) -> bool:
    """Text that is tool-call JSON the engine could not take as one call (several objects, a broken one)."""
    body = text.strip().removeprefix("```json").removeprefix("```").strip()
    return body.startswith("{") and '"name"' in body


async def finish(ctx: HandlerContext, engine: str, request: str, done: list[tuple[str, str]]) -> str | None:
    """One last model call, without tools and with the results as plain text, for the answer; stopped as a
    loop if even then the model only writes tool calls. (Small local models keep calling tools after the
    work is done; the plain form gets them to answer.)"""
    settings = ctx.settings.agent
    results = "\n".join(f"- {tool}: {output}" for tool, output in done) or "(none)"
    result: ChatResult = await ctx.pool.run(engine, ChatRequest(
        messages=[{"role": "system", "content": FINISH},
                  {"role": "user", "content": f"Request: {request}\n\nTool results:\n{results}"}],
        max_tokens=settings.max_tokens, temperature=settings.temperature))
    await record_usage(ctx, result, engine=engine)
    answer = result.text.strip()
    if result.tool_calls or looks_like_calls(answer) or not answer:
        await _stop(ctx, "agent_loop", tool=done[-1][0] if done else "?")
        return None
    await ctx.responder.send(answer)
    return answer


def _tool_message(call_id: str, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


async def _stop(ctx: HandlerContext, key: str, **params: Any) -> None:
    await ctx.responder.send(ctx.t(key, **params))


async def agent_command(event: IncomingEvent, ctx: HandlerContext) -> None:
    request = str(ctx.state["args"].get("request") or "").strip()
    if request.lower() in ("on", "off", "开", "关"):
        await set_channel(ctx, event, "agent_mode", request.lower() in ("on", "开"))
        await ctx.responder.send(ctx.t("agent_mode_now", state=ctx.t("yes" if request.lower() in ("on", "开")
                                                                      else "no")))
        return
    if not request:
        config = await resolve(ctx)
        await ctx.responder.send(ctx.t("agent_usage", state=ctx.t("yes" if config.agent_mode else "no")))
        return
    await run_agent(ctx, event, request)


def register(router: Router) -> None:
    router.command("agent", "cmd_agent", options=[Option("request", OptionType.TEXT, "opt_agent_request")],
                   examples=("/agent draw a cat, then make it blue, then upscale it", "/agent 现在几点？",
                             "/agent on"))(agent_command)
