"""The engine pool: what handlers call to run engines, and the in-process implementation of it.

`create_pool` picks the implementation from `PoolSettings.placement`. Only `local` exists today
(its imports are all light: no torch until an engine needs it); a distributed backend would be
imported lazily in its own branch of `create_pool`, behind the same `EnginePool` API.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Protocol

from bot.errors import EngineUnavailable, UnknownEngine
from bot.metrics import Metrics
from bot.settings import EngineSettings, PoolSettings, default_engines
from engines.base import JobRecorder
from engines.budget import MemoryBudget
from engines.jobs import BackgroundTasks, EngineHealth, Job, JobStream, ProgressCallback, name_engine
from engines.slot import EngineSlot
from engines.workers import make_worker

log = logging.getLogger(__name__)

REMOTE = "remote"  # the device of engines that only call out over the network

RECORDS_WAIT_S = 5.0


class EnginePool(Protocol):
    """Runs jobs on named engines: queued, batched, timed out, cancelled, recorded."""

    async def start(self) -> None: ...

    async def run(
        self,
        engine: str,
        payload: Any,
        *,
        progress: ProgressCallback | None = None,
        event_id: str | None = None,
        timeout: float | None = None,
    ) -> Any: ...

    def submit(
        self,
        engine: str,
        payload: Any,
        *,
        progress: ProgressCallback | None = None,
        event_id: str | None = None,
        timeout: float | None = None,
    ) -> Job: ...

    def stream(
        self,
        engine: str,
        payload: Any,
        *,
        progress: ProgressCallback | None = None,
        event_id: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Any]: ...

    def health(self) -> dict[str, EngineHealth]: ...

    def queue_depth(self, engine: str) -> int: ...

    async def close(self, drain_timeout: float = 30) -> None: ...


class LocalEnginePool:
    """Every engine in this machine: worker threads or child processes, one memory budget.

    Each engine has a bounded queue and a serve loop running one batch at a time (see
    `EngineSlot`); the batches of engines on the same device share a semaphore of
    `device_concurrency[device]` (1 for a device not listed). Engines on the device "remote"
    (HTTP APIs) are not gated: their own `concurrency` bounds them.
    """

    def __init__(
        self,
        engines: dict[str, EngineSettings],
        pool: PoolSettings,
        recorder: JobRecorder,
        metrics: Metrics | None = None,
    ) -> None:
        configured = {**default_engines(), **engines}  # the builtin noop engine is always there
        concurrency = {
            s.device: pool.device_concurrency.get(s.device, 1) for s in configured.values() if s.device != REMOTE
        }
        self._tasks = BackgroundTasks()
        self._executor = ThreadPoolExecutor(
            max_workers=2 * len(configured) + sum(concurrency.values()), thread_name_prefix="engine"
        )
        self._budget = MemoryBudget(pool.memory_budget_mb)
        gates = {device: asyncio.Semaphore(limit) for device, limit in concurrency.items()}
        self._slots = {
            name: EngineSlot(
                name,
                settings,
                make_worker(name, settings, self._executor),
                budget=self._budget,
                device_gate=gates.get(settings.device),
                recorder=recorder,
                metrics=metrics,
                tasks=self._tasks,
            )
            for name, settings in configured.items()
        }
        self._started = False
        self._closing = False
        self._closed = False

    async def start(self) -> None:
        """Start each engine's serve loop. Engines load lazily, on their first job."""
        if self._closing:
            raise EngineUnavailable("the engine pool is closed")
        for slot in self._slots.values():
            slot.start()
        self._started = True
        log.info("engine pool started: %s", ", ".join(self._slots))

    async def run(
        self,
        engine: str,
        payload: Any,
        *,
        progress: ProgressCallback | None = None,
        event_id: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Submit a job and wait for its result. Cancelling the caller cancels the job."""
        job = self.submit(engine, payload, progress=progress, event_id=event_id, timeout=timeout)
        return await job.result()

    def submit(
        self,
        engine: str,
        payload: Any,
        *,
        progress: ProgressCallback | None = None,
        event_id: str | None = None,
        timeout: float | None = None,
    ) -> Job:
        """Queue a job and return at once. Raises `EngineBusy` if the engine's queue is full."""
        return self._slot(engine).submit(
            payload, progress=progress, event_id=event_id, timeout=timeout, streaming=False
        )

    def stream(
        self,
        engine: str,
        payload: Any,
        *,
        progress: ProgressCallback | None = None,
        event_id: str | None = None,
        timeout: float | None = None,
    ) -> JobStream:
        """Queue a streaming job (now: `EngineBusy` is raised here) and iterate its chunks."""
        job = self._slot(engine).submit(
            payload, progress=progress, event_id=event_id, timeout=timeout, streaming=True
        )
        return JobStream(job)

    def health(self) -> dict[str, EngineHealth]:
        return {name: slot.health() for name, slot in self._slots.items()}

    def queue_depth(self, engine: str) -> int:
        return self._known(engine).queue_depth

    async def close(self, drain_timeout: float = 30) -> None:
        """Stop taking jobs, let queued and running ones finish (up to `drain_timeout` s), cancel the
        rest, unload every engine and stop the worker processes."""
        if self._closing:
            return
        self._closing = True
        log.info("engine pool closing: draining for up to %g s", drain_timeout)
        slots = list(self._slots.values())
        if not all(slot.idle for slot in slots):
            try:
                await asyncio.wait_for(asyncio.gather(*(slot.wait_idle() for slot in slots)), drain_timeout)
            except TimeoutError:
                log.warning("engine pool: jobs still unfinished after %g s; cancelling them", drain_timeout)
        for slot in slots:
            slot.abort_all("the engine pool shut down before the job finished")
        for slot in slots:
            await slot.stop()
        await self._budget.unload_all()
        for slot in slots:
            await slot.worker.close()
        await self._tasks.wait(RECORDS_WAIT_S)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._closed = True
        log.info("engine pool closed")

    async def __aenter__(self) -> LocalEnginePool:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _slot(self, engine: str) -> EngineSlot:
        if self._closing or not self._started:
            closed = EngineUnavailable(
                "the engine pool is shutting down" if self._closing else "the engine pool has not been started"
            )
            name_engine(closed, engine)
            raise closed
        return self._known(engine)

    def _known(self, engine: str) -> EngineSlot:
        slot = self._slots.get(engine)
        if slot is None:
            unknown = UnknownEngine(f"no engine named {engine!r} is configured")
            name_engine(unknown, engine)
            raise unknown
        return slot


def create_pool(
    engines: dict[str, EngineSettings],
    pool: PoolSettings,
    recorder: JobRecorder,
    metrics: Metrics | None = None,
) -> LocalEnginePool:
    """The pool `pool.placement` asks for."""
    if pool.placement == "local":
        return LocalEnginePool(engines, pool, recorder, metrics)
    raise ValueError(f"unknown engine placement {pool.placement!r}")
