"""The usage ledger: tokens, seconds and cost per engine call, summed for quotas and reports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import func, insert, select

from storage.models import Usage
from storage.repositories.base import Repository


@dataclass(frozen=True)
class UsageTotals:
    calls: int
    tokens_in: int
    tokens_out: int
    seconds: float
    cost: Decimal


class UsageRepository(Repository):
    """Appends usage rows and sums them by user, channel or workspace."""

    async def record(
        self,
        engine: str,
        *,
        model: str | None = None,
        tokens_in: int = 0,
        tokens_out: int = 0,
        seconds: float = 0.0,
        cost: Decimal | float = Decimal(0),
        workspace_pk: int | None = None,
        channel_pk: int | None = None,
        user_pk: int | None = None,
    ) -> None:
        stmt = insert(Usage).values(
            engine=engine,
            model=model,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            seconds=seconds,
            cost=Decimal(str(cost)) if isinstance(cost, float) else cost,
            workspace_id=workspace_pk,
            channel_id=channel_pk,
            user_id=user_pk,
        )
        async with self._sessions.begin() as session:
            await session.execute(stmt)

    async def totals(
        self,
        since: datetime,
        *,
        user_pk: int | None = None,
        channel_pk: int | None = None,
        workspace_pk: int | None = None,
        engine: str | None = None,
    ) -> UsageTotals:
        """Sums over rows created at or after `since`, filtered by whichever keys are given."""
        stmt = select(
            func.count(),
            func.coalesce(func.sum(Usage.tokens_in), 0),
            func.coalesce(func.sum(Usage.tokens_out), 0),
            func.coalesce(func.sum(Usage.seconds), 0.0),
            func.coalesce(func.sum(Usage.cost), 0),
        ).where(Usage.created_at >= since)
        if user_pk is not None:
            stmt = stmt.where(Usage.user_id == user_pk)
        if channel_pk is not None:
            stmt = stmt.where(Usage.channel_id == channel_pk)
        if workspace_pk is not None:
            stmt = stmt.where(Usage.workspace_id == workspace_pk)
        if engine is not None:
            stmt = stmt.where(Usage.engine == engine)
        async with self._sessions() as session:
            calls, tokens_in, tokens_out, seconds, cost = (await session.execute(stmt)).one()
        return UsageTotals(
            calls=int(calls),
            tokens_in=int(tokens_in),
            tokens_out=int(tokens_out),
            seconds=float(seconds),
            cost=Decimal(cost),
        )

    async def daily(
        self, since: datetime, *, workspace_pk: int | None = None, user_pk: int | None = None
    ) -> list[tuple[date, UsageTotals]]:
        """Totals per UTC day from `since`, oldest first; days without usage are left out."""
        day = func.date_trunc("day", func.timezone("UTC", Usage.created_at))
        stmt = select(
            day,
            func.count(),
            func.coalesce(func.sum(Usage.tokens_in), 0),
            func.coalesce(func.sum(Usage.tokens_out), 0),
            func.coalesce(func.sum(Usage.seconds), 0.0),
            func.coalesce(func.sum(Usage.cost), 0),
        ).where(Usage.created_at >= since).group_by(day).order_by(day)
        if workspace_pk is not None:
            stmt = stmt.where(Usage.workspace_id == workspace_pk)
        if user_pk is not None:
            stmt = stmt.where(Usage.user_id == user_pk)
        async with self._sessions() as session:
            rows = (await session.execute(stmt)).all()
        return [
            (d.date(), UsageTotals(int(c), int(ti), int(to), float(s), Decimal(cost)))
            for d, c, ti, to, s, cost in rows
        ]
