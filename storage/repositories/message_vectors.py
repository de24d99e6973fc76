"""Embeddings of what people wrote in a channel, for /similar and /topics.

Messages are embedded lazily, per embedding model, the first time a search needs them. Every
query is bounded to one channel of one workspace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, literal_column, select
from sqlalchemy.dialects.postgresql import insert

from storage.models import Conversation, Message, MessageEmbedding
from storage.repositories.base import Repository
from storage.repositories.documents import cosine_distance, sql_string


@dataclass(frozen=True)
class MessageHit:
    id: int
    content: str
    meta: dict[str, Any] | None
    created_at: datetime
    score: float


@dataclass(frozen=True)
class MessageVector:
    id: int
    content: str
    vector: list[float]


def _channel_messages(channel_pk: int) -> Any:
    """User messages of every conversation in the channel."""
    return (select(Message.id, Message.content, Message.meta, Message.created_at)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(Conversation.channel_id == channel_pk, Message.role == "user", func.length(Message.content) > 0))


class MessageVectorRepository(Repository):
    async def missing(self, channel_pk: int, model: str, limit: int) -> list[tuple[int, str]]:
        """The newest `limit` user messages of the channel that have no vector for `model` yet."""
        has = select(MessageEmbedding.message_id).where(MessageEmbedding.message_id == Message.id,
                                                        MessageEmbedding.model == model)
        stmt = _channel_messages(channel_pk).where(~has.exists()).order_by(Message.id.desc()).limit(limit)
        async with self._sessions() as session:
            return [(row.id, row.content) for row in (await session.execute(stmt)).all()]

    async def recent_texts(self, channel_pk: int, limit: int) -> list[tuple[int, str]]:
        """The newest `limit` user messages of the channel, oldest first."""
        stmt = _channel_messages(channel_pk).order_by(Message.id.desc()).limit(limit)
        async with self._sessions() as session:
            rows = (await session.execute(stmt)).all()
        return [(row.id, row.content) for row in reversed(rows)]

    async def add(self, workspace_pk: int, channel_pk: int, model: str,
                  vectors: Sequence[tuple[int, Sequence[float]]]) -> None:
        if not vectors:
            return
        rows = [{"message_id": mid, "model": model, "workspace_id": workspace_pk, "channel_id": channel_pk,
                 "embedding": list(vec)} for mid, vec in vectors]
        async with self._sessions.begin() as session:
            await session.execute(insert(MessageEmbedding).on_conflict_do_nothing(), rows)

    async def recent(self, channel_pk: int, model: str, limit: int) -> list[MessageVector]:
        """The newest `limit` embedded user messages of the channel, oldest first."""
        stmt = (select(Message.id, Message.content, MessageEmbedding.embedding)
                .join(MessageEmbedding, and_(MessageEmbedding.message_id == Message.id,
                                             MessageEmbedding.model == model))
                .where(MessageEmbedding.channel_id == channel_pk)
                .order_by(Message.id.desc()).limit(limit))
        async with self._sessions() as session:
            rows = (await session.execute(stmt)).all()
        return [MessageVector(r.id, r.content, [float(x) for x in r.embedding]) for r in reversed(rows)]

    async def similar(self, workspace_pk: int, channel_pk: int, model: str, vector: Sequence[float],
                      k: int, exclude: Sequence[int] = ()) -> list[MessageHit]:
        """The channel's user messages nearest to `vector` (exact cosine over one channel's rows)."""
        distance = cosine_distance(MessageEmbedding.embedding, vector)
        stmt = (select(Message.id, Message.content, Message.meta, Message.created_at, (1 - distance).label("score"))
                .join(MessageEmbedding, MessageEmbedding.message_id == Message.id)
                .where(literal_column(f"message_embedding.model = {sql_string(model)}"),
                       MessageEmbedding.workspace_id == workspace_pk, MessageEmbedding.channel_id == channel_pk,
                       Message.id.not_in(list(exclude)) if exclude else literal_column("true"))
                .order_by(distance).limit(k))
        async with self._sessions() as session:
            rows = (await session.execute(stmt)).all()
        return [MessageHit(r.id, r.content, r.meta, r.created_at, float(r.score)) for r in rows]
