"""Feature handlers. Each module exposes `register(router)`; none imports a platform library."""

from __future__ import annotations

from bot.router import Router
from handlers import core


def build_router() -> Router:
    """The router with every feature registered, in /help order."""
    router = Router()
    core.register(router)
    return router
