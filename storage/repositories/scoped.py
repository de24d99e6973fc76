"""Per-workspace and per-channel setting overrides, changed by admin commands."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert

from storage.models import ScopedSetting
from storage.repositories.base import Repository

Scope = Literal["workspace", "channel"]
SCOPES: tuple[str, ...] = ("workspace", "channel")


def _check(scope: str) -> None:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, not {scope!r}")


class ScopedSettingRepository(Repository):
    """Key -> JSON value overrides for one workspace or channel (by its database id)."""

    async def get(self, scope: Scope, scope_id: int) -> dict[str, Any]:
        """Every override for the scope, as {key: value}."""
        _check(scope)
        stmt = select(ScopedSetting.key, ScopedSetting.value).where(
            ScopedSetting.scope == scope, ScopedSetting.scope_id == scope_id
        )
        async with self._sessions() as session:
            rows = (await session.execute(stmt)).all()
        return {key: value for key, value in rows}

    async def set(self, scope: Scope, scope_id: int, key: str, value: Any, updated_by: str | None) -> None:
        """Insert or replace one override."""
        _check(scope)
        stmt = insert(ScopedSetting).values(
            scope=scope, scope_id=scope_id, key=key, value=value, updated_by=updated_by
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["scope", "scope_id", "key"],
            set_={
                "value": stmt.excluded.value,
                "updated_by": stmt.excluded.updated_by,
                "updated_at": func.now(),
            },
        )
        async with self._sessions.begin() as session:
            await session.execute(stmt)

    async def delete(self, scope: Scope, scope_id: int, key: str) -> bool:
        """Remove one override; True if it existed."""
        _check(scope)
        stmt = delete(ScopedSetting).where(
            ScopedSetting.scope == scope, ScopedSetting.scope_id == scope_id, ScopedSetting.key == key
        )
        async with self._sessions.begin() as session:
            result = await session.execute(stmt)
        return bool(result.rowcount)  # type: ignore[attr-defined]
