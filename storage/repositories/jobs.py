"""The `job` table: the pool's record of every engine job (implements `engines.base.JobRecorder`)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from storage.models import Job
from storage.repositories.base import Repository, Sessions

log = logging.getLogger(__name__)

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
    """Records jobs as queued -> running -> a final status; reads them back for /status and ops.

    Writes are buffered and flushed together every `flush_interval_s` (one transaction for many
    jobs), so recording never sits in a job's path; `flush()` forces them out, `close()` on the
    store calls it.
    """

    def __init__(self, sessions: Sessions, flush_interval_s: float = 0.05) -> None:
        super().__init__(sessions)
        self.flush_interval_s = flush_interval_s
        self._queued: list[dict[str, Any]] = []
        self._started: list[dict[str, Any]] = []
        self._finished: list[dict[str, Any]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def job_queued(self, job_id: str, engine: str, event_id: str | None) -> None:
        self._queued.append({"id": job_id, "engine": engine, "event_id": event_id, "status": "queued",
                             "queued_at": _now()})
        self._schedule()

    async def job_started(self, job_id: str, queue_s: float) -> None:
        self._started.append({"b_id": job_id, "b_at": _now(), "b_queue_s": queue_s})
        self._schedule()

    async def job_finished(self, job_id: str, status: str, run_s: float, error: str | None = None) -> None:
        if error is not None and len(error) > MAX_ERROR_CHARS:
            error = error[:MAX_ERROR_CHARS] + "…"
        self._finished.append({"b_id": job_id, "b_status": status, "b_at": _now(), "b_run_s": run_s,
                               "b_error": error})
        self._schedule()

    def _schedule(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.flush_interval_s)
        try:
            await self.flush()
        except Exception:  # recording must never take the service down; the next flush retries
            log.exception("could not record jobs")

    async def flush(self) -> None:
        """Write every buffered record now, in order: inserts, then starts, then finishes."""
        async with self._lock:
            queued, started, finished = self._queued, self._started, self._finished
            self._queued, self._started, self._finished = [], [], []
            if not (queued or started or finished):
                return
            table = cast(Table, Job.__table__)
            try:
                async with self._sessions.begin() as session:
                    if queued:
                        await session.execute(pg_insert(table).on_conflict_do_nothing(), queued)
                    if started:
                        await session.execute(
                            update(table).where(table.c.id == bindparam("b_id"), table.c.status == "queued")
                            .values(status="running", started_at=bindparam("b_at"), queue_s=bindparam("b_queue_s")),
                            started,
                        )
                    if finished:
                        await session.execute(
                            update(table).where(table.c.id == bindparam("b_id"))
                            .values(status=bindparam("b_status"), finished_at=bindparam("b_at"),
                                    run_s=bindparam("b_run_s"), error=bindparam("b_error")),
                            finished,
                        )
            except Exception:
                # Put them back for the next flush, keeping their order.
                self._queued[:0], self._started[:0], self._finished[:0] = queued, started, finished
                raise

    async def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
        await self.flush()

    async def job_progress(self, job_id: str, fraction: float) -> None:
        """Store the latest progress fraction (callers should throttle this)."""
        stmt = update(Job).where(Job.id == job_id).values(progress=max(0.0, min(1.0, fraction)))
        async with self._sessions.begin() as session:
            await session.execute(stmt)

    async def get(self, job_id: str) -> JobRow | None:
        await self.flush()  # read your own writes
        async with self._sessions() as session:
            job = (await session.execute(select(Job).where(Job.id == job_id))).scalar_one_or_none()
        return None if job is None else _row(job)

    async def recent(self, limit: int = 50, engine: str | None = None) -> list[JobRow]:
        """The latest jobs, newest first."""
        await self.flush()
        stmt = select(Job).order_by(Job.queued_at.desc(), Job.id.desc()).limit(limit)
        if engine is not None:
            stmt = stmt.where(Job.engine == engine)
        async with self._sessions() as session:
            return [_row(j) for j in (await session.execute(stmt)).scalars().all()]


def _now() -> datetime:
    return datetime.now(UTC)


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
