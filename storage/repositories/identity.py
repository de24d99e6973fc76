"""Who and where: workspaces, channels and users, created on first sight."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import AppUser, Channel, Workspace
from storage.repositories.base import Repository, Sessions

Role = Literal["user", "admin"]
ROLES: tuple[str, ...] = ("user", "admin")


@dataclass(frozen=True)
class Identity:
    """Database keys and facts for the sender of one event."""

    workspace_pk: int
    channel_pk: int
    user_pk: int
    role: str
    is_new_user: bool
    workspace_locale: str | None
    user_locale: str | None


class IdentityRepository(Repository):
    """Upserts workspace, channel and user rows; safe when the same newcomer sends twice at once.

    Every event needs its sender's rows, so answers are cached in this process for `ttl_s`
    (a returning user costs no query); changes made through this repository clear the cache.
    Another process's role change is seen within `ttl_s`.
    """

    def __init__(self, sessions: Sessions, ttl_s: float = 60.0, max_entries: int = 50_000) -> None:
        super().__init__(sessions)
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._cache: dict[tuple[str, str, str, str], tuple[Identity, float]] = {}

    async def ensure(
        self,
        platform: str,
        workspace_ext: str,
        channel_ext: str,
        user_ext: str,
        user_name: str | None = None,
        is_dm: bool = False,
        workspace_name: str | None = None,
    ) -> Identity:
        """Find or create the three rows, refresh the user's last_seen, and say whether the user is new."""
        key = (platform, workspace_ext, channel_ext, user_ext)
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[1] < self.ttl_s:
            return cached[0]
        async with self._sessions.begin() as session:
            workspace_pk, workspace_locale = await _workspace(
                session, platform, workspace_ext, workspace_name
            )
            channel_pk = await _channel(session, workspace_pk, channel_ext, is_dm)
            user_pk, role, user_locale, is_new = await _user(session, workspace_pk, user_ext, user_name)
        identity = Identity(
            workspace_pk=workspace_pk,
            channel_pk=channel_pk,
            user_pk=user_pk,
            role=role,
            is_new_user=is_new,
            workspace_locale=workspace_locale,
            user_locale=user_locale,
        )
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        self._cache[key] = (dataclasses.replace(identity, is_new_user=False), time.monotonic())
        return identity

    def forget(self) -> None:
        """Drop cached identities (after a change to roles or locales)."""
        self._cache.clear()

    async def set_role(self, user_pk: int, role: Role) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        async with self._sessions.begin() as session:
            result = await session.execute(update(AppUser).where(AppUser.id == user_pk).values(role=role))
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise LookupError(f"no user with id {user_pk}")
        self.forget()

    async def set_user_locale(self, user_pk: int, locale: str | None) -> None:
        async with self._sessions.begin() as session:
            await session.execute(update(AppUser).where(AppUser.id == user_pk).values(locale=locale))
        self.forget()

    async def set_workspace_locale(self, workspace_pk: int, locale: str | None) -> None:
        async with self._sessions.begin() as session:
            await session.execute(update(Workspace).where(Workspace.id == workspace_pk).values(locale=locale))
        self.forget()


# Each helper reads first (the common case), then inserts with ON CONFLICT DO NOTHING; a concurrent
# insert of the same key makes ours return nothing, and the re-read then sees the winner's row.


async def _workspace(
    session: AsyncSession, platform: str, external_id: str, name: str | None
) -> tuple[int, str | None]:
    find = select(Workspace.id, Workspace.locale, Workspace.name).where(
        Workspace.platform == platform, Workspace.external_id == external_id
    )
    for _ in range(2):
        row = (await session.execute(find)).one_or_none()
        if row is not None:
            if name and row.name != name:
                await session.execute(update(Workspace).where(Workspace.id == row.id).values(name=name))
            return row.id, row.locale
        created = await session.execute(
            insert(Workspace)
            .values(platform=platform, external_id=external_id, name=name)
            .on_conflict_do_nothing(index_elements=["platform", "external_id"])
            .returning(Workspace.id)
        )
        pk = created.scalar_one_or_none()
        if pk is not None:
            return pk, None
    raise RuntimeError("workspace vanished during upsert")


async def _channel(session: AsyncSession, workspace_pk: int, external_id: str, is_dm: bool) -> int:
    find = select(Channel.id).where(Channel.workspace_id == workspace_pk, Channel.external_id == external_id)
    for _ in range(2):
        pk = (await session.execute(find)).scalar_one_or_none()
        if pk is not None:
            return pk
        created = await session.execute(
            insert(Channel)
            .values(workspace_id=workspace_pk, external_id=external_id, is_dm=is_dm)
            .on_conflict_do_nothing(index_elements=["workspace_id", "external_id"])
            .returning(Channel.id)
        )
        pk = created.scalar_one_or_none()
        if pk is not None:
            return pk
    raise RuntimeError("channel vanished during upsert")


async def _user(
    session: AsyncSession, workspace_pk: int, external_id: str, name: str | None
) -> tuple[int, str, str | None, bool]:
    """(pk, role, locale, is_new): touch last_seen of an existing user, else create one."""
    values: dict[str, object] = {"last_seen": func.now()}
    if name:
        values["name"] = name
    touch = (
        update(AppUser)
        .where(AppUser.workspace_id == workspace_pk, AppUser.external_id == external_id)
        .values(**values)
        .returning(AppUser.id, AppUser.role, AppUser.locale)
    )
    for _ in range(2):
        row = (await session.execute(touch)).one_or_none()
        if row is not None:
            return row.id, row.role, row.locale, False
        created = await session.execute(
            insert(AppUser)
            .values(workspace_id=workspace_pk, external_id=external_id, name=name)
            .on_conflict_do_nothing(index_elements=["workspace_id", "external_id"])
            .returning(AppUser.id, AppUser.role, AppUser.locale)
        )
        new = created.one_or_none()
        if new is not None:
            return new.id, new.role, new.locale, True
    raise RuntimeError("user vanished during upsert")
