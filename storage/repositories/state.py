"""Key-value facts the service keeps about itself."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from storage.models import AppState
from storage.repositories.base import Repository


class StateRepository(Repository):
    async def get(self, key: str) -> Any:
        async with self._sessions() as session:
            return (await session.execute(select(AppState.value).where(AppState.key == key))).scalar_one_or_none()

    async def set(self, key: str, value: Any) -> None:
        stmt = insert(AppState).values(key=key, value=value)
        stmt = stmt.on_conflict_do_update(index_elements=["key"], set_={"value": value, "updated_at": func.now()})
        async with self._sessions.begin() as session:
            await session.execute(stmt)
