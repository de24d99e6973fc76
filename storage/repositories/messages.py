"""Messages of a conversation, in the order they were added."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB

from storage.models import Conversation, Message
from storage.repositories.base import Repository


@dataclass(frozen=True)
class MessageRow:
    id: int
    conversation_id: int
    role: str
    content: str
    token_count: int
    attachments: list[dict[str, Any]] | None
    meta: dict[str, Any] | None
    created_at: datetime


class MessageRepository(Repository):
    """Appends to and reads back a conversation's history."""

    async def add(
        self,
        conversation_id: int,
        role: str,
        content: str,
        token_count: int = 0,
        attachments: list[dict[str, Any]] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> int:
        stmt = (
            insert(Message)
            .values(
                conversation_id=conversation_id,
                role=role,
                content=content,
                token_count=token_count,
                attachments=attachments,
                meta=meta,
            )
            .returning(Message.id)
        )
        async with self._sessions.begin() as session:
            return (await session.execute(stmt)).scalar_one()

    async def count_user_messages(self, user_pk: int, since: datetime) -> int:
        """How many messages this user has sent (in any conversation) since `since`."""
        stmt = (select(func.count()).select_from(Message)
                .join(Conversation, Conversation.id == Message.conversation_id)
                .where(Conversation.user_id == user_pk, Message.role == "user", Message.created_at >= since))
        async with self._sessions() as session:
            return int((await session.execute(stmt)).scalar_one())

    async def recent(self, conversation_id: int, limit: int) -> list[MessageRow]:
        """The last `limit` messages, oldest first."""
        stmt = (
            select(Message)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.id.desc())
            .limit(limit)
        )
        async with self._sessions() as session:
            rows = (await session.execute(stmt)).scalars().all()
        return [_row(m) for m in reversed(rows)]

    async def after(self, conversation_id: int, after_id: int) -> list[MessageRow]:
        """Every message with an id above `after_id`, oldest first."""
        stmt = (
            select(Message)
            .where(Message.conversation_id == conversation_id, Message.id > after_id)
            .order_by(Message.id)
        )
        async with self._sessions() as session:
            return [_row(m) for m in (await session.execute(stmt)).scalars().all()]

    async def workspace_of(self, message_id: int) -> int | None:
        """The workspace whose conversation holds the message (None when there is no such message)."""
        stmt = (
            select(Conversation.workspace_id)
            .join(Message, Message.conversation_id == Conversation.id)
            .where(Message.id == message_id)
        )
        async with self._sessions() as session:
            return (await session.execute(stmt)).scalar_one_or_none()

    async def get(self, message_id: int) -> MessageRow | None:
        async with self._sessions() as session:
            found = (await session.execute(select(Message).where(Message.id == message_id))).scalar_one_or_none()
        return None if found is None else _row(found)

    async def update_meta(self, message_id: int, **values: Any) -> bool:
        """Merge `values` into the message's meta; False when there is no such message."""
        stmt = (
            update(Message)
            .where(Message.id == message_id)
            .values(meta=func.coalesce(Message.meta, literal({}, JSONB)).op("||")(literal(values, JSONB)))
        )
        async with self._sessions.begin() as session:
            result = await session.execute(stmt)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def rated(self, rating: int, conversation_ids: list[int] | None = None) -> list[MessageRow]:
        """Assistant messages whose meta carries this rating, oldest first."""
        stmt = select(Message).where(Message.role == "assistant", Message.meta["rating"].as_integer() == rating)
        if conversation_ids is not None:
            stmt = stmt.where(Message.conversation_id.in_(conversation_ids))
        async with self._sessions() as session:
            return [_row(m) for m in (await session.execute(stmt.order_by(Message.id))).scalars().all()]

    async def upto(self, conversation_id: int, last_id: int) -> list[MessageRow]:
        """The conversation from its start through message `last_id`, oldest first."""
        stmt = (
            select(Message)
            .where(Message.conversation_id == conversation_id, Message.id <= last_id)
            .order_by(Message.id)
        )
        async with self._sessions() as session:
            return [_row(m) for m in (await session.execute(stmt)).scalars().all()]

    async def count(self, conversation_id: int) -> int:
        stmt = select(func.count()).select_from(Message).where(Message.conversation_id == conversation_id)
        async with self._sessions() as session:
            return (await session.execute(stmt)).scalar_one()


def _row(m: Message) -> MessageRow:
    return MessageRow(
        id=m.id,
        conversation_id=m.conversation_id,
        role=m.role,
        content=m.content,
        token_count=m.token_count,
        attachments=m.attachments,
        meta=m.meta,
        created_at=m.created_at,
    )
