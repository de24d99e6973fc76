"""What a handler receives besides the event: services, responder, identity and language."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.locks import ConversationLocks
from bot.messages import t

if TYPE_CHECKING:
    from bot.events import IncomingEvent
    from bot.metrics import Metrics
    from bot.responder import Responder
    from bot.router import Command, Router
    from bot.settings import Settings
    from bot.tasks import TaskTracker
    from engines.pool import LocalEnginePool
    from storage.db import Store
    from storage.repositories.identity import Identity


async def _not_ready(event: IncomingEvent, responder: Responder) -> None:
    raise RuntimeError("dispatcher not wired")


@dataclass
class Services:
    """The long-lived parts, built once by the composition root."""

    settings: Settings
    store: Store
    pool: LocalEnginePool
    router: Router
    metrics: Metrics
    tasks: TaskTracker
    locks: ConversationLocks = field(default_factory=ConversationLocks)
    # What a feature builds once per process on first use (e.g. a calibrated classifier), by feature name.
    features: dict[str, Any] = field(default_factory=dict)
    # Set by the composition root once the dispatcher exists; lets a handler run a derived event.
    dispatch: Callable[[IncomingEvent, Responder], Awaitable[None]] = field(default=_not_ready, repr=False)


class EventLog(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every line with the event id."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        return f"[{extra.get('event_id', '-')}] {msg}", {**kwargs, "extra": {**extra, **kwargs.get("extra", {})}}


@dataclass
class HandlerContext:
    """Passed to every middleware and handler; nothing here is global."""

    services: Services
    responder: Responder
    log: EventLog
    locale: str = "en"
    identity: Identity | None = None
    command: Command | None = None
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def store(self) -> Store:
        return self.services.store

    @property
    def pool(self) -> LocalEnginePool:
        return self.services.pool

    @property
    def router(self) -> Router:
        return self.services.router

    def t(self, key: str, **params: object) -> str:
        """A message in this user's language."""
        return t(key, self.locale, **params)
