"""Chat memory state: a conversation's running summary, and remembered facts about entities."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert

from storage.models import ConversationMemory, EntityFact
from storage.repositories.base import Repository


@dataclass(frozen=True)
class Summary:
    text: str
    upto: int  # id of the last message folded into the summary (0: none)


@dataclass(frozen=True)
class FactRow:
    id: int
    entity: str
    fact: str
    conversation_id: int | None


class MemoryRepository(Repository):
    """Summaries per conversation; facts per conversation, or per workspace when shared."""

    async def summary(self, conversation_id: int) -> Summary:
        stmt = select(ConversationMemory).where(ConversationMemory.conversation_id == conversation_id)
        async with self._sessions() as session:
            row = (await session.execute(stmt)).scalar_one_or_none()
        return Summary("", 0) if row is None else Summary(row.summary, row.summarized_upto)

    async def set_summary(self, conversation_id: int, text: str, upto: int) -> None:
        stmt = insert(ConversationMemory).values(conversation_id=conversation_id, summary=text, summarized_upto=upto)
        stmt = stmt.on_conflict_do_update(
            index_elements=["conversation_id"],
            set_={"summary": text, "summarized_upto": upto, "updated_at": func.now()},
        )
        async with self._sessions.begin() as session:
            await session.execute(stmt)

    async def add_fact(self, workspace_pk: int, conversation_id: int | None, entity: str, fact: str) -> int | None:
        """Remember a fact; an identical one already known is not added twice (returns None)."""
        key = entity.strip().lower()
        async with self._sessions.begin() as session:
            same = select(EntityFact.id).where(
                EntityFact.workspace_id == workspace_pk, EntityFact.entity_key == key,
                func.lower(EntityFact.fact) == fact.strip().lower(),
            )
            if (await session.execute(same)).first() is not None:
                return None
            stmt = insert(EntityFact).values(workspace_id=workspace_pk, conversation_id=conversation_id,
                                             entity=entity.strip(), entity_key=key, fact=fact.strip())
            return (await session.execute(stmt.returning(EntityFact.id))).scalar_one()

    async def facts(self, workspace_pk: int, conversation_id: int | None = None) -> list[FactRow]:
        """Facts of the conversation plus the workspace-wide ones, oldest first."""
        stmt = select(EntityFact).where(EntityFact.workspace_id == workspace_pk)
        if conversation_id is not None:
            stmt = stmt.where(or_(EntityFact.conversation_id == conversation_id, EntityFact.conversation_id.is_(None)))
        async with self._sessions() as session:
            rows = (await session.execute(stmt.order_by(EntityFact.id))).scalars().all()
        return [FactRow(r.id, r.entity, r.fact, r.conversation_id) for r in rows]

    async def forget(self, workspace_pk: int, what: str) -> int:
        """Delete a fact by id, or every fact about an entity by name; returns how many went."""
        condition = (
            EntityFact.id == int(what) if what.strip().isdigit() else EntityFact.entity_key == what.strip().lower()
        )
        stmt = delete(EntityFact).where(EntityFact.workspace_id == workspace_pk, condition)
        async with self._sessions.begin() as session:
            result = await session.execute(stmt)
        return int(result.rowcount)  # type: ignore[attr-defined]
