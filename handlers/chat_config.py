"""Per-channel chat controls: persona, model parameters, banned words and memory strategy.

Values resolve in order: the service's `[chat]` settings, then the workspace's stored overrides,
then the channel's. Commands here change the channel's and write the change to the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from bot.context import HandlerContext
from bot.errors import UserFacingError
from bot.events import IncomingEvent
from bot.router import Option, OptionType, Router
from bot.settings import ChatSettings, Settings
from storage.repositories.scoped import Scope

MEMORY_STRATEGIES = ("buffer_window", "summary", "summary_buffer", "entity")
OVERRIDABLE = ("persona", "engine", "model", "temperature", "max_tokens", "json_mode", "seed", "ban_words", "memory",
               "answer_with_voice", "voice_mode", "docs_mode", "answer_with_video",
               "agent_mode")


@dataclass(frozen=True)
class ChatConfig:
    """What one conversation turn runs with."""

    system_prompt: str
    memory: str
    engine: str
    model: str | None
    temperature: float | None
    max_tokens: int
    json_mode: bool = False
    seed: int | None = None
    ban_words: tuple[str, ...] = ()
    persona: str | None = None
    answer_with_voice: bool = False
    voice_mode: str = "transcribe"
    docs_mode: bool = False
    answer_with_video: bool = False
    agent_mode: bool = False
    sources: dict[str, str] = field(default_factory=dict)  # key -> "default" | "workspace" | "channel"

    @property
    def system(self) -> str:
        return self.persona or self.system_prompt


def defaults(chat: ChatSettings) -> ChatConfig:
    return ChatConfig(system_prompt=chat.system_prompt, memory=chat.memory, engine=chat.engine, model=chat.model,
                      temperature=chat.temperature, max_tokens=chat.max_tokens)


def with_service_defaults(config: ChatConfig, settings: Settings) -> ChatConfig:
    speech = settings.speech
    return replace(config, answer_with_voice=speech.answer_with_voice, voice_mode=speech.voice_mode,
                   docs_mode=settings.docs.docs_mode, answer_with_video=settings.presenter.answer_with_video,
                   agent_mode=settings.agent.agent_mode)


async def resolve(ctx: HandlerContext) -> ChatConfig:
    """The effective config for this event's channel."""
    config = with_service_defaults(defaults(ctx.settings.chat), ctx.settings)
    if ctx.identity is None:
        return config
    sources = {key: "default" for key in OVERRIDABLE}
    scopes: tuple[tuple[Scope, int], ...] = (("workspace", ctx.identity.workspace_pk),
                                              ("channel", ctx.identity.channel_pk))
    for scope, scope_id in scopes:
        stored = await ctx.store.scoped.get(scope, scope_id)
        values = {k: v for k, v in stored.items() if k in OVERRIDABLE}
        if "ban_words" in values:
            values["ban_words"] = tuple(values["ban_words"])
        config = replace(config, **values)
        sources.update({k: scope for k in values})
    return replace(config, sources=sources)


async def set_channel(ctx: HandlerContext, event: IncomingEvent, key: str, value: Any) -> None:
    """Store (or with None, clear) an override for this channel, or with the `workspace` option
    (admins only) for the whole workspace, and audit it."""
    assert ctx.identity is not None
    actor = f"{event.platform}:{event.user_id}"
    workspace = bool(ctx.state.get("args", {}).get("workspace"))
    if workspace and ctx.identity.role != "admin":
        raise UserFacingError("forbidden", command=f"{ctx.command.name if ctx.command else ''} workspace:yes")
    scope: Scope = "workspace" if workspace else "channel"
    scope_id = ctx.identity.workspace_pk if workspace else ctx.identity.channel_pk
    if value is None:
        await ctx.store.scoped.delete(scope, scope_id, key)
    else:
        await ctx.store.scoped.set(scope, scope_id, key, value, actor)
    await ctx.store.audit.log(actor, f"chat.{key}", {"scope": scope, "channel": event.channel_id, "value": value},
                              workspace_pk=ctx.identity.workspace_pk)


async def persona(event: IncomingEvent, ctx: HandlerContext) -> None:
    text = str(ctx.state["args"].get("text", "")).strip()
    if not text:
        config = await resolve(ctx)
        await ctx.responder.send(ctx.t("persona_show", persona=config.system))
        return
    if text.lower() in ("clear", "reset", "default", "清除"):
        await set_channel(ctx, event, "persona", None)
        await ctx.responder.send(ctx.t("persona_cleared"))
        return
    await set_channel(ctx, event, "persona", text[:4000])
    await ctx.responder.send(ctx.t("persona_set", persona=text[:4000]))


async def model(event: IncomingEvent, ctx: HandlerContext) -> None:
    args = ctx.state["args"]
    changes = {k: args[k] for k in ("name", "engine", "temperature", "max_tokens", "json", "seed") if k in args}
    if "engine" in changes and changes["engine"] not in ("default", "clear") \
            and changes["engine"] not in ctx.pool.health():
        raise UserFacingError("unknown_engine", engine=changes["engine"], engines=", ".join(sorted(ctx.pool.health())))
    for option, key in (("name", "model"), ("engine", "engine"), ("temperature", "temperature"),
                        ("max_tokens", "max_tokens"), ("json", "json_mode"), ("seed", "seed")):
        if option in changes:
            value = changes[option]
            await set_channel(ctx, event, key, None if value in ("default", "clear") else value)
    config = await resolve(ctx)
    await ctx.responder.send(ctx.t(
        "model_show", engine=config.engine, model=config.model or ctx.t("engine_default"),
        temperature=config.temperature if config.temperature is not None else ctx.t("engine_default"),
        max_tokens=config.max_tokens, json=ctx.t("yes" if config.json_mode else "no"),
        seed=config.seed if config.seed is not None else "-",
    ))


async def ban_words(event: IncomingEvent, ctx: HandlerContext) -> None:
    text = str(ctx.state["args"].get("words", "")).strip()
    if not text:
        config = await resolve(ctx)
        await ctx.responder.send(ctx.t("ban_words_show", words=", ".join(config.ban_words) or "-"))
        return
    if text.lower() in ("clear", "none", "清除"):
        await set_channel(ctx, event, "ban_words", None)
        await ctx.responder.send(ctx.t("ban_words_cleared"))
        return
    words = sorted({w.strip() for w in text.replace("，", ",").split(",") if w.strip()})
    if len(words) > 50:
        raise UserFacingError("ban_words_too_many", limit=50)
    await set_channel(ctx, event, "ban_words", words)
    await ctx.responder.send(ctx.t("ban_words_set", words=", ".join(words)))


WORKSPACE = Option("workspace", OptionType.BOOLEAN, "opt_workspace_scope")


def register(router: Router) -> None:
    router.command("persona", "cmd_persona", options=[Option("text", OptionType.TEXT, "opt_persona_text"), WORKSPACE],
                   examples=("/persona You are a terse senior engineer.", "/persona clear"))(persona)
    router.command(
        "model", "cmd_model",
        options=[
            Option("name", OptionType.TEXT, "opt_model_name"),
            Option("engine", OptionType.TEXT, "opt_engine"),
            Option("temperature", OptionType.NUMBER, "opt_temperature", min_value=0, max_value=2),
            Option("max_tokens", OptionType.INTEGER, "opt_max_tokens", min_value=1, max_value=32768),
            Option("json", OptionType.BOOLEAN, "opt_json"),
            Option("seed", OptionType.INTEGER, "opt_seed"),
            WORKSPACE,
        ],
        examples=("/model", "/model temperature:0.2 seed:7"),
    )(model)
    router.command("ban-words", "cmd_ban_words", options=[Option("words", OptionType.TEXT, "opt_ban_words"), WORKSPACE],
                   examples=("/ban-words lunch, coffee", "/ban-words clear"))(ban_words)
