"""The audit log: who changed what, for admin actions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select

from storage.models import AuditLog
from storage.repositories.base import Repository


@dataclass(frozen=True)
class AuditRow:
    id: int
    workspace_pk: int | None
    actor: str
    action: str
    detail: dict[str, Any] | None
    created_at: datetime


class AuditRepository(Repository):
    """Appends audit entries and lists the latest ones."""

    async def log(
        self, actor: str, action: str, detail: dict[str, Any] | None = None, workspace_pk: int | None = None
    ) -> int:
        stmt = (
            insert(AuditLog)
            .values(actor=actor, action=action, detail=detail, workspace_id=workspace_pk)
            .returning(AuditLog.id)
        )
        async with self._sessions.begin() as session:
            return (await session.execute(stmt)).scalar_one()

    async def recent(self, limit: int = 50, workspace_pk: int | None = None) -> list[AuditRow]:
        """The latest entries, newest first."""
        stmt = select(AuditLog).order_by(AuditLog.id.desc()).limit(limit)
        if workspace_pk is not None:
            stmt = stmt.where(AuditLog.workspace_id == workspace_pk)
        async with self._sessions() as session:
            rows = (await session.execute(stmt)).scalars().all()
        return [
            AuditRow(
                id=a.id,
                workspace_pk=a.workspace_id,
                actor=a.actor,
                action=a.action,
                detail=a.detail,
                created_at=a.created_at,
            )
            for a in rows
        ]
