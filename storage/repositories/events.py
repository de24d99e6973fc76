"""Deduplication of platform events: the first delivery of an event id wins."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func
from sqlalchemy.dialects.postgresql import insert

from storage.models import ProcessedEvent
from storage.repositories.base import Repository


class EventRepository(Repository):
    """Claims event ids so retried or duplicated deliveries are handled once."""

    async def claim(self, platform: str, event_id: str) -> bool:
        """True only for the first claim of (platform, event_id), even under concurrent claims."""
        stmt = (
            insert(ProcessedEvent)
            .values(platform=platform, event_id=event_id)
            .on_conflict_do_nothing(index_elements=["platform", "event_id"])
            .returning(ProcessedEvent.event_id)
        )
        async with self._sessions.begin() as session:
            claimed = (await session.execute(stmt)).scalar_one_or_none()
        return claimed is not None

    async def prune(self, older_than: timedelta) -> int:
        """Forget event ids claimed more than `older_than` ago; returns how many."""
        stmt = delete(ProcessedEvent).where(ProcessedEvent.created_at < func.now() - older_than)
        async with self._sessions.begin() as session:
            result = await session.execute(stmt)
        return int(result.rowcount)  # type: ignore[attr-defined]
