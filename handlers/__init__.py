"""Feature handlers. Each module exposes `register(router)`; none imports a platform library."""

from __future__ import annotations

from bot.router import Router
from handlers import (
    agent,
    analytics,
    chat,
    chat_config,
    core,
    docs,
    feedback,
    images,
    memory,
    moderation,
    presenter,
    speech,
    unittest_cmd,
    usage,
    vision,
)


def build_router() -> Router:
    """The router with every feature registered, in /help order."""
    router = Router()
    core.register(router)
    chat.register(router)
    chat_config.register(router)
    memory.register(router)
    usage.register(router)
    feedback.register(router)
    speech.register(router)
    docs.register(router)
    analytics.register(router)
    moderation.register(router)
    presenter.register(router)
    images.register(router)
    vision.register(router)
    agent.register(router)
    unittest_cmd.register(router)
    return router
