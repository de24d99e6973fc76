"""The command registry and dispatch table.

Handlers register here with decorators; the registry is the single source for /help, the
web page's autocomplete, the Slack manifest and Discord's application commands.
"""

from __future__ import annotations

import difflib
import enum
import re
import shlex
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.errors import UserFacingError
from bot.events import Attachment, EventKind, IncomingEvent
from bot.messages import MESSAGES, Msg, t

if TYPE_CHECKING:
    from bot.context import HandlerContext

Handler = Callable[[IncomingEvent, "HandlerContext"], Awaitable[None]]


def split_command(text: str) -> tuple[str, str] | None:
    """`"/imagine a fox"` -> `("imagine", "a fox")`; None when the text is not a command."""
    m = re.match(r"^/([A-Za-z][\w-]*)(?:\s+(.*))?$", text.strip(), re.S)
    if not m:
        return None
    return m.group(1).lower(), (m.group(2) or "").strip()


class OptionType(enum.StrEnum):
    TEXT = "text"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    ATTACHMENT = "attachment"


TRUE_WORDS = {"true", "yes", "y", "on", "1", "是", "开"}
FALSE_WORDS = {"false", "no", "n", "off", "0", "否", "关"}


@dataclass(frozen=True)
class Option:
    """A typed command option. `description` is a key in `bot.messages`."""

    name: str
    type: OptionType
    description: str
    required: bool = False
    choices: tuple[str, ...] = ()
    min_value: float | None = None
    max_value: float | None = None


@dataclass(frozen=True)
class Command:
    name: str
    description: str  # key in bot.messages
    handler: Handler
    options: tuple[Option, ...] = ()
    role: str = "user"  # "user" | "admin"
    examples: tuple[str, ...] = ()

    def describe(self, locale: str | None) -> str:
        return t(self.description, locale)

    def usage(self) -> str:
        parts = [f"/{self.name}"]
        for opt in self.options:
            label = opt.name if opt.type != OptionType.ATTACHMENT else f"{opt.name} (file)"
            parts.append(f"<{label}>" if opt.required else f"[{label}]")
        return " ".join(parts)


@dataclass
class Router:
    """Commands by name, and one handler per non-command event kind and per action id."""

    commands: dict[str, Command] = field(default_factory=dict)
    kind_handlers: dict[EventKind, Handler] = field(default_factory=dict)
    action_handlers: dict[str, Handler] = field(default_factory=dict)

    def command(
        self,
        name: str,
        description: str,
        options: Sequence[Option] = (),
        role: str = "user",
        examples: Sequence[str] = (),
    ) -> Callable[[Handler], Handler]:
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", name):
            raise ValueError(f"bad command name {name!r}")
        if description not in MESSAGES:
            raise ValueError(f"command {name}: description key {description!r} is not in bot.messages")

        def register(handler: Handler) -> Handler:
            if name in self.commands:
                raise ValueError(f"command /{name} registered twice")
            self.commands[name] = Command(name, description, handler, tuple(options), role, tuple(examples))
            return handler

        return register

    def on(self, kind: EventKind) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.kind_handlers[kind] = handler
            return handler

        return register

    def action(self, action_id: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.action_handlers[action_id] = handler
            return handler

        return register

    # -- lookup -------------------------------------------------------------------------
    def resolve(self, event: IncomingEvent) -> tuple[Handler, Command | None]:
        """The handler for an event; raises `UserFacingError` for unknown commands."""
        if event.kind == EventKind.COMMAND:
            cmd = self.commands.get((event.command or "").lower())
            if cmd is None:
                raise self.unknown(event.command or "")
            return cmd.handler, cmd
        if event.kind == EventKind.ACTION:
            action = (event.action_id or "").split(":", 1)[0]
            handler = self.action_handlers.get(action)
            if handler is None:
                raise UserFacingError("unknown_action")
            return handler, None
        handler = self.kind_handlers.get(event.kind) or self.kind_handlers.get(EventKind.MESSAGE)
        if handler is None:
            raise UserFacingError("unknown_command_plain", command=event.kind.value, suggestion="")
        return handler, None

    def unknown(self, name: str) -> UserFacingError:
        close = difflib.get_close_matches(name.lower(), list(self.commands), n=1, cutoff=0.5)
        if not close:  # prefixes like /hel or /pi
            close = [c for c in sorted(self.commands) if c.startswith(name.lower()[:3])][:1] if name else []
        return UserFacingError("unknown_command_suggest" if close else "unknown_command_plain",
                               command=name, suggestion=close[0] if close else "")

    def schema(self, locale: str | None) -> list[dict[str, Any]]:
        """Commands as plain data, for autocomplete and platform manifests."""
        return [
            {
                "name": c.name,
                "description": c.describe(locale),
                "usage": c.usage(),
                "role": c.role,
                "options": [
                    {
                        "name": o.name,
                        "type": o.type.value,
                        "required": o.required,
                        "description": t(o.description, locale),
                        "choices": list(o.choices),
                    }
                    for o in c.options
                ],
            }
            for c in sorted(self.commands.values(), key=lambda c: c.name)
        ]

    # -- argument parsing ---------------------------------------------------------------
    def parse_args(self, cmd: Command, text: str, attachments: Sequence[Attachment]) -> dict[str, Any]:
        """Typed options from a command line such as `a red fox steps:20 --seed 7`.

        Named options are `name:value`, `name=value` or `--name value`; a leading word that is one of
        an option's choices fills it; the remaining words fill the other options in order, the first
        free-text option taking the rest of the line.
        """
        by_name = {o.name: o for o in cmd.options}
        try:
            tokens = shlex.split(text)
        except ValueError:
            tokens = text.split()
        raw: dict[str, str] = {}
        positional: list[str] = []
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            m = re.fullmatch(r"(?:--)?([A-Za-z][\w-]*)[:=](.+)", tok)
            if m and m.group(1).replace("-", "_") in by_name:
                raw[m.group(1).replace("-", "_")] = m.group(2)
            elif tok.startswith("--") and len(tok) > 2:
                name = tok[2:].replace("-", "_")
                opt = by_name.get(name)
                if opt is None:
                    raise UserFacingError("unknown_option", command=cmd.name, option=tok,
                                          options=", ".join(by_name) or "-")
                following = tokens[i + 1].lower() if i + 1 < len(tokens) else ""
                if opt.type == OptionType.BOOLEAN and following not in TRUE_WORDS | FALSE_WORDS:
                    raw[name] = "true"
                else:
                    i += 1
                    raw[name] = tokens[i] if i < len(tokens) else ""
            else:
                positional.append(tok)
            i += 1
        free = [o for o in cmd.options if o.name not in raw and o.type != OptionType.ATTACHMENT]
        # A leading word that is one of an option's choices fills that option (`/docs remove old.pdf`).
        for opt in free:
            if opt.choices and positional and positional[0].lower() in {c.lower() for c in opt.choices}:
                raw[opt.name] = positional.pop(0)
        free = [o for o in free if o.name not in raw]
        text_opt = next((o for o in free if o.type == OptionType.TEXT and not o.choices), None)
        if text_opt is not None and positional:
            # Free words are the text (a prompt, a question); other options go by name.
            raw[text_opt.name] = " ".join(positional)
            positional = []
        for opt in free:
            if not positional:
                break
            if opt.name not in raw:
                raw[opt.name] = positional.pop(0)
        if positional:
            raise UserFacingError("unknown_option", command=cmd.name, option=positional[0],
                                  options=", ".join(by_name) or "-")
        return self.coerce(cmd, raw, list(attachments))

    def coerce(self, cmd: Command, raw: Mapping[str, Any], files: Sequence[Attachment]) -> dict[str, Any]:
        """Validate and convert option values; attachments fill attachment options in order."""
        out: dict[str, Any] = {}
        files = list(files)
        for opt in cmd.options:
            if opt.type == OptionType.ATTACHMENT:
                value: Any = raw.get(opt.name) or (files.pop(0) if files else None)
            else:
                value = raw.get(opt.name)
                if value is not None:
                    value = self._convert(cmd, opt, value)
            if value is None or value == "":
                if opt.required:
                    raise UserFacingError("missing_option", command=cmd.name, option=opt.name,
                                          description=Msg(opt.description))
                continue
            out[opt.name] = value
        return out

    def _convert(self, cmd: Command, opt: Option, value: Any) -> Any:
        def bad() -> UserFacingError:
            return UserFacingError("bad_option", command=cmd.name, option=opt.name,
                                   expected=Msg(f"type_{opt.type.value}"), value=str(value)[:50])

        text = str(value).strip()
        converted: Any
        if opt.type == OptionType.INTEGER:
            if isinstance(value, bool) or not re.fullmatch(r"[+-]?\d+", text):
                raise bad()
            converted = int(text)
        elif opt.type == OptionType.NUMBER:
            try:
                converted = float(text)
            except ValueError:
                raise bad() from None
        elif opt.type == OptionType.BOOLEAN:
            if isinstance(value, bool):
                converted = value
            elif text.lower() in TRUE_WORDS:
                converted = True
            elif text.lower() in FALSE_WORDS:
                converted = False
            else:
                raise bad()
        else:
            converted = text
        if opt.choices and str(converted) not in opt.choices:
            raise UserFacingError("bad_choice", command=cmd.name, option=opt.name, choices=", ".join(opt.choices))
        if isinstance(converted, (int, float)) and not isinstance(converted, bool):
            if (opt.min_value is not None and converted < opt.min_value) or (
                opt.max_value is not None and converted > opt.max_value
            ):
                raise UserFacingError("out_of_range", command=cmd.name, option=opt.name,
                                      low=opt.min_value, high=opt.max_value)
        return converted
