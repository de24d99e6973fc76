"""Conversations: the running history for one thread key in a channel."""

from __future__ import annotations

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Channel, Conversation, Workspace
from storage.repositories.base import Repository
from storage.repositories.identity import Identity


class ConversationRepository(Repository):
    """Finds the active conversation for a channel and key, or starts a fresh one."""

    async def current(self, identity: Identity, key: str) -> int:
        """The active conversation's id, created if there is none."""
        async with self._sessions.begin() as session:
            return await _current(session, identity, key)

    async def exists(self, platform: str, workspace_ext: str, channel_ext: str, key: str) -> bool:
        """Whether a conversation with this thread key exists (any state) in that channel."""
        stmt = (
            select(Conversation.id)
            .join(Channel, Channel.id == Conversation.channel_id)
            .join(Workspace, Workspace.id == Channel.workspace_id)
            .where(Workspace.platform == platform, Workspace.external_id == workspace_ext,
                   Channel.external_id == channel_ext, Conversation.key == key)
            .limit(1)
        )
        async with self._sessions() as session:
            return (await session.execute(stmt)).first() is not None

    async def reset(self, identity: Identity, key: str) -> int:
        """Close the active conversation (if any) and start a new one; returns the new id."""
        async with self._sessions.begin() as session:
            await session.execute(
                update(Conversation)
                .where(
                    Conversation.channel_id == identity.channel_pk,
                    Conversation.key == key,
                    Conversation.active.is_(True),
                )
                .values(active=False)
            )
            return await _current(session, identity, key)


async def _current(session: AsyncSession, identity: Identity, key: str) -> int:
    # The partial unique index on (channel_id, key) WHERE active makes a concurrent second
    # insert a no-op; the re-read then finds the winner's row.
    find = select(Conversation.id).where(
        Conversation.channel_id == identity.channel_pk,
        Conversation.key == key,
        Conversation.active.is_(True),
    )
    for _ in range(3):
        pk = (await session.execute(find)).scalar_one_or_none()
        if pk is not None:
            return pk
        created = await session.execute(
            insert(Conversation)
            .values(
                workspace_id=identity.workspace_pk,
                channel_id=identity.channel_pk,
                user_id=identity.user_pk,
                key=key,
                active=True,
            )
            .on_conflict_do_nothing(
                index_elements=["channel_id", "key", "active"], index_where=text("active")
            )
            .returning(Conversation.id)
        )
        pk = created.scalar_one_or_none()
        if pk is not None:
            return pk
    raise RuntimeError("active conversation vanished during upsert")
