"""The error tree shared by every layer.

`UserFacingError` carries a message key from `bot.messages`; the router shows it in the user's
language. Engine errors split like vLLM's: recoverable (`EngineError`, `EngineBusy`, `JobTimeout`)
and `EngineUnavailable` for a worker that died or could not load.
"""

from __future__ import annotations

from typing import Any


class BotError(Exception):
    """Base of every error this service raises on purpose."""


class UserFacingError(BotError):
    """An error whose text is shown to the user as is (after translation)."""

    def __init__(self, key: str, **params: Any) -> None:
        super().__init__(key)
        self.key = key
        self.params = params


class UnsupportedInput(UserFacingError):
    """A file or argument the bot cannot take: wrong type, too big, empty, corrupt."""


class RateLimited(UserFacingError):
    """The user sent too much too fast."""


class EngineError(BotError):
    """A job failed inside an engine; the engine keeps serving.

    The pool sets `engine` (and `timeout` on `JobTimeout`) so the reply can name them.
    """

    engine: str | None = None
    timeout: float | None = None


class EngineBusy(EngineError):
    """The engine's queue is full: try again later."""


class EngineUnavailable(EngineError):
    """The engine could not load, or its worker died while running the job."""


class JobTimeout(EngineError):
    """A job ran past its time limit and was cancelled."""


class UnknownEngine(EngineError):
    """No engine of that name is configured."""
