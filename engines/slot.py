"""One configured engine in the pool: its bounded queue, its worker, and the loop that batches its jobs."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from typing import Any

from bot.errors import EngineBusy, EngineError, EngineUnavailable, JobTimeout
from bot.metrics import Metrics
from bot.settings import EngineSettings
from engines.base import JobRecorder
from engines.budget import MemoryBudget
from engines.jobs import (
    BackgroundTasks,
    EngineHealth,
    EngineState,
    Job,
    JobStatus,
    ProgressCallback,
    engine_error,
    name_engine,
    short_error,
)
from engines.workers import Worker, WorkerDied

log = logging.getLogger(__name__)


class EngineSlot:
    """Queues jobs for one engine and feeds them to its worker, one batch at a time.

    The serve loop waits for a job, has the memory budget load the engine if needed, collects up
    to `max_batch` queued jobs within `batch_wait_ms`, and runs them under the device's semaphore.
    Streaming jobs run alone. `finish` is the single place a job ends, whatever ends it.
    """

    def __init__(
        self,
        name: str,
        settings: EngineSettings,
        worker: Worker,
        *,
        budget: MemoryBudget,
        device_gate: asyncio.Semaphore | None,
        recorder: JobRecorder,
        metrics: Metrics | None,
        tasks: BackgroundTasks,
    ) -> None:
        self.name = name
        self.settings = settings
        self.worker = worker
        self.state: EngineState = "unloaded"
        self.last_error: str | None = None
        self.memory_mb = settings.memory_mb
        self.completed = 0
        self.failed = 0
        self._budget = budget
        self._gate = device_gate
        self._recorder = recorder
        self._metrics = metrics
        self._tasks = tasks
        self._queue: deque[Job] = deque()
        self._running: list[Job] = []
        self._working = False  # a batch has been taken and is not yet over
        self._inflight = 0  # batches running at once (up to settings.concurrency)
        self._batches: set[asyncio.Task[None]] = set()
        self._arrived = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._serve_task: asyncio.Task[None] | None = None

    # --- what the pool calls

    def start(self) -> None:
        if self._serve_task is None:
            loop = asyncio.get_running_loop()
            self._serve_task = loop.create_task(self._serve(), name=f"engine-{self.name}")

    async def stop(self) -> None:
        task, self._serve_task = self._serve_task, None
        for running in [*self._batches, *([task] if task is not None else [])]:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running

    def submit(
        self,
        payload: Any,
        *,
        progress: ProgressCallback | None,
        event_id: str | None,
        timeout: float | None,
        streaming: bool,
    ) -> Job:
        if len(self._queue) >= self.settings.queue_size:
            busy = EngineBusy(f"engine {self.name} has {len(self._queue)} jobs queued, its limit")
            name_engine(busy, self.name)
            raise busy
        limit = self.settings.timeout_s if timeout is None else timeout
        if limit <= 0:
            raise ValueError(f"timeout must be positive, not {limit}")
        job = Job(
            self, self.name, payload,
            event_id=event_id, progress=progress, streaming=streaming, tasks=self._tasks,
        )
        job.timer = asyncio.get_running_loop().call_later(limit, self._expire, job, limit)
        self._queue.append(job)
        job.records.add(lambda: self._recorder.job_queued(job.id, self.name, event_id))
        log.debug("job %s (event %s) queued on %s at %d", job.id, event_id, self.name, len(self._queue))
        self._changed()
        return job

    def position(self, job: Job) -> int:
        try:
            return self._queue.index(job) + 1
        except ValueError:
            return 0

    def finish(
        self, job: Job, status: JobStatus, *, result: Any = None, error: BaseException | None = None
    ) -> bool:
        """End `job`: dequeue it, resolve it, tell its engine, record it. False if it was already over."""
        if job.done:
            return False
        was_running = job in self._running
        if was_running:
            self._running.remove(job)
        else:
            with contextlib.suppress(ValueError):
                self._queue.remove(job)
        if error is not None:
            name_engine(error, self.name)
        job.settle(status, result, error)
        if was_running and status != "ok":
            self.worker.cancel(job.id)
        if status == "ok":
            self.completed += 1
        elif status != "cancelled":
            self.failed += 1
        text = short_error(error) if error is not None else None
        job.records.add(lambda: self._recorder.job_finished(job.id, status, job.run_s, text))
        if self._metrics is not None:
            self._metrics.job_seconds.labels(self.name, status).observe(job.run_s)
        if status in ("ok", "cancelled"):
            log.debug("job %s (event %s) on %s: %s", job.id, job.event_id, self.name, status)
        else:
            log.warning("job %s (event %s) on %s: %s: %s", job.id, job.event_id, self.name, status, text)
        self._changed()
        return True

    def abort_all(self, reason: str) -> None:
        for job in [*self._running, *self._queue]:
            self.finish(job, "cancelled", error=EngineUnavailable(reason))

    @property
    def idle(self) -> bool:
        return self._idle.is_set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def health(self) -> EngineHealth:
        dead = self.state == "ready" and not self.worker.alive  # its child died while idle
        return EngineHealth(
            state="unloaded" if dead else self.state,
            queued=len(self._queue),
            running=len(self._running),
            completed=self.completed,
            failed=self.failed,
            last_error=self.last_error,
            loaded=self.state == "ready" and not dead,
            memory_mb=self.memory_mb,
        )

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # --- what the memory budget calls

    def is_ready(self) -> bool:
        return self.state == "ready" and self.worker.alive

    async def prepare(self) -> int:
        self.state = "loading"
        log.info("loading engine %s", self.name)
        try:
            reported = await self.worker.prepare()
        except Exception as e:
            raise self._load_failed(e) from e
        self.memory_mb = self.settings.memory_mb or reported
        return self.memory_mb

    async def load(self) -> None:
        started = time.monotonic()
        try:
            reported = await self.worker.load()
        except Exception as e:
            await self.worker.close()  # the retry starts from a fresh engine (and a fresh child)
            raise self._load_failed(e) from e
        self.memory_mb = self.settings.memory_mb or reported
        self.state = "ready"
        self._set_loaded(1)
        log.info("engine %s loaded in %.2f s (%d MB)", self.name, time.monotonic() - started, self.memory_mb)

    async def unload(self) -> None:
        self.state = "unloaded"
        self._set_loaded(0)
        log.info("unloading engine %s", self.name)
        await self.worker.unload()

    # --- the serve loop

    async def _serve(self) -> None:
        lanes = asyncio.Semaphore(self.settings.concurrency)
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            await lanes.acquire()
            if not self._queue:  # the jobs we woke for were cancelled meanwhile
                lanes.release()
                continue
            if self._inflight == 0:
                try:
                    await self._budget.acquire(self)
                except Exception as e:  # the load failed: every waiting job fails; the next one retries
                    lanes.release()
                    reason = str(e) if isinstance(e, EngineUnavailable) else short_error(e)
                    for job in list(self._queue):
                        self.finish(job, "unavailable", error=EngineUnavailable(reason))
                    continue
            self._inflight += 1
            self._working = True
            batch = await self._collect() if self._queue else []
            task = asyncio.get_running_loop().create_task(self._run_batch(batch, lanes))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
            if self.settings.concurrency == 1:
                await task

    async def _run_batch(self, batch: list[Job], lanes: asyncio.Semaphore) -> None:
        try:
            if batch:
                await self._execute(batch)
        except Exception as e:  # a bug here must not leave callers waiting forever
            log.exception("engine %s: serve loop failed", self.name)
            for job in batch:
                self.finish(job, "error", error=engine_error(e))
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._working = False
                self._changed()
                await self._budget.release(self)
            else:
                self._changed()
            lanes.release()

    async def _collect(self) -> list[Job]:
        batch = [self._take()]
        max_batch = self.settings.max_batch
        if batch[0].streaming or max_batch == 1:
            return batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.batch_wait_ms / 1000
        while len(batch) < max_batch:
            while self._queue and len(batch) < max_batch and not self._queue[0].streaming:
                batch.append(self._take())
            remaining = deadline - loop.time()
            if len(batch) >= max_batch or self._queue or remaining <= 0:
                break  # full, a streaming job is next, or time is up
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        return [job for job in batch if not job.done]

    def _take(self) -> Job:
        job = self._queue.popleft()
        self._running.append(job)
        return job

    async def _execute(self, batch: list[Job]) -> None:
        try:
            async with self._gate or contextlib.nullcontext():
                batch = [job for job in batch if not job.done]  # some may have ended while we waited
                if not batch:
                    return
                self._started(batch)
                if batch[0].streaming:
                    await self.worker.stream(batch[0].request, batch[0].push_chunk)
                    results: list[Any] = [None]
                else:
                    results = await self.worker.run([job.request for job in batch])
        except WorkerDied as e:
            await self._worker_lost(e)
            for job in batch:
                self.finish(job, "unavailable", error=EngineUnavailable(str(e)))
            return
        except Exception as e:
            for job in batch:
                self._fail(job, e)
            return
        if len(results) != len(batch):
            mismatch = f"{self.name} returned {len(results)} results for {len(batch)} requests"
            for job in batch:
                self._fail(job, EngineError(mismatch))
            return
        for job, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                self._fail(job, result)
            else:
                self.finish(job, "ok", result=result)

    def _started(self, batch: list[Job]) -> None:
        now = time.monotonic()
        for job in batch:
            job.started_at = now
            queue_s = job.queue_s
            job.records.add(functools.partial(self._recorder.job_started, job.id, queue_s))
            if self._metrics is not None:
                self._metrics.queue_seconds.labels(self.name).observe(queue_s)
        if self._metrics is not None:
            self._metrics.batch_size.labels(self.name).observe(len(batch))
        log.debug("engine %s: running %d job(s): %s", self.name, len(batch), " ".join(j.id for j in batch))

    def _fail(self, job: Job, error: BaseException) -> None:
        wrapped = engine_error(error)
        status: JobStatus = "error"
        if isinstance(wrapped, JobTimeout):
            status = "timeout"
        elif isinstance(wrapped, EngineUnavailable):
            status = "unavailable"
        self.finish(job, status, error=wrapped)

    def _expire(self, job: Job, limit: float) -> None:
        error = JobTimeout(f"job {job.id} on {self.name} took longer than {limit:g} s")
        name_engine(error, self.name, timeout_s=limit)
        self.finish(job, "timeout", error=error)

    async def _worker_lost(self, error: WorkerDied) -> None:
        self.state = "unloaded"
        self.last_error = short_error(error)
        self._set_loaded(0)
        await self._budget.forget(self)

    def _load_failed(self, error: Exception) -> EngineUnavailable:
        self.state = "failed"
        self.last_error = short_error(error)
        self._set_loaded(0)
        log.error("engine %s failed to load: %s", self.name, self.last_error)
        return EngineUnavailable(f"engine {self.name} could not load: {self.last_error}")

    def _set_loaded(self, value: int) -> None:
        if self._metrics is not None:
            self._metrics.engine_loaded.labels(self.name).set(value)

    def _changed(self) -> None:
        if self._queue:
            self._arrived.set()
        if self._queue or self._working:
            self._idle.clear()
        else:
            self._idle.set()
        if self._metrics is not None:
            self._metrics.queue_depth.labels(self.name).set(len(self._queue))
            self._metrics.running.labels(self.name).set(len(self._running))
