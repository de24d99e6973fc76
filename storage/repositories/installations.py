"""Platform installations and OAuth state; what is stored is sealed by the caller."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert

from storage.models import Installation, OAuthState
from storage.repositories.base import Repository


class InstallationRepository(Repository):
    async def save(self, platform: str, enterprise_id: str | None, team_id: str, sealed: str) -> None:
        stmt = insert(Installation).values(platform=platform, enterprise_id=enterprise_id or "", team_id=team_id,
                                           sealed=sealed)
        stmt = stmt.on_conflict_do_update(index_elements=["platform", "enterprise_id", "team_id"],
                                          set_={"sealed": sealed, "installed_at": func.now()})
        async with self._sessions.begin() as session:
            await session.execute(stmt)

    async def find(self, platform: str, enterprise_id: str | None, team_id: str | None) -> str | None:
        stmt = select(Installation.sealed).where(Installation.platform == platform,
                                                 Installation.enterprise_id == (enterprise_id or ""),
                                                 Installation.team_id == (team_id or ""))
        async with self._sessions() as session:
            return (await session.execute(stmt)).scalar_one_or_none()

    async def delete(self, platform: str, enterprise_id: str | None, team_id: str | None) -> None:
        stmt = delete(Installation).where(Installation.platform == platform,
                                          Installation.enterprise_id == (enterprise_id or ""),
                                          Installation.team_id == (team_id or ""))
        async with self._sessions.begin() as session:
            await session.execute(stmt)

    async def issue_state(self, state: str, ttl: timedelta) -> None:
        async with self._sessions.begin() as session:
            await session.execute(insert(OAuthState).values(state=state, expires_at=datetime.now(UTC) + ttl))

    async def consume_state(self, state: str) -> bool:
        """True once for a state that was issued and has not expired."""
        stmt = delete(OAuthState).where(OAuthState.state == state).returning(OAuthState.expires_at)
        async with self._sessions.begin() as session:
            expires = (await session.execute(stmt)).scalar_one_or_none()
        return expires is not None and expires > datetime.now(UTC)
