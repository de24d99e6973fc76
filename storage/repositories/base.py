"""What every repository shares: the session factory it opens one short session from per call."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

Sessions = async_sessionmaker[AsyncSession]


class Repository:
    """Base for repositories: holds the session factory; subclasses add one area's queries."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions
