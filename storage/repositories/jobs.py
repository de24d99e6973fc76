"""The `job` table: the pool's record of every engine job (implements `engines.base.JobRecorder`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update

from storage.models import Job
from storage.repositories.base import Repository

MAX_ERROR_CHARS = 4000


@dataclass(frozen=True)
class JobRow:
    id: str
    engine: str
    event_id: str | None
    status: str
    progress: float
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queue_s: float | None
    run_s: float | None
    error: str | None


class JobRepository(Repository):
    """Records jobs as queued -> running -> a final status; reads them back for /status and ops."""

    async def job_queued(self, job_id: str, engine: str, event_id: str | None) -> None:
        stmt = insert(Job).values(id=job_id, engine=engine, event_id=event_id, status="queued")
        async with self._sessions.begin() as session:
            await session.execute(stmt)

    async def job_started(self, job_id: str, queue_s: float) -> None:
        stmt = (
            update(Job)
            .where(Job.id == job_id)
            .values(status="running", started_at=func.now(), queue_s=queue_s)
        )
        async with self._sessions.begin() as session:
            await session.execute(stmt)

    async def job_finished(self, job_id: str, status: str, run_s: float, error: str | None = None) -> None:
        if error is not None and len(error) > MAX_ERROR_CHARS:
            error = error[:MAX_ERROR_CHARS] + "…"
        stmt = (
            update(Job)
            .where(Job.id == job_id)
            .values(status=status, finished_at=func.now(), run_s=run_s, error=error)
        )
        async with self._sessions.begin() as session:
            await session.execute(stmt)

    async def job_progress(self, job_id: str, fraction: float) -> None:
        """Store the latest progress fraction (callers should throttle this)."""
        stmt = update(Job).where(Job.id == job_id).values(progress=max(0.0, min(1.0, fraction)))
        async with self._sessions.begin() as session:
            await session.execute(stmt)

    async def get(self, job_id: str) -> JobRow | None:
        async with self._sessions() as session:
            job = (await session.execute(select(Job).where(Job.id == job_id))).scalar_one_or_none()
        return None if job is None else _row(job)

    async def recent(self, limit: int = 50, engine: str | None = None) -> list[JobRow]:
        """The latest jobs, newest first."""
        stmt = select(Job).order_by(Job.queued_at.desc(), Job.id.desc()).limit(limit)
        if engine is not None:
            stmt = stmt.where(Job.engine == engine)
        async with self._sessions() as session:
            return [_row(j) for j in (await session.execute(stmt)).scalars().all()]


def _row(j: Job) -> JobRow:
    return JobRow(
        id=j.id,
        engine=j.engine,
        event_id=j.event_id,
        status=j.status,
        progress=j.progress,
        queued_at=j.queued_at,
        started_at=j.started_at,
        finished_at=j.finished_at,
        queue_s=j.queue_s,
        run_s=j.run_s,
        error=j.error,
    )
