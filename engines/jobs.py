"""A job: one request's way through an engine's queue, as the pool tracks it and the caller holds it."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bot.errors import BotError, EngineError
from engines.base import EngineRequest

log = logging.getLogger(__name__)

JobStatus = Literal["ok", "error", "timeout", "cancelled", "unavailable"]
EngineState = Literal["unloaded", "loading", "ready", "failed"]
ProgressCallback = Callable[[float, str], Awaitable[None] | None]

ERROR_CHARS = 300
END_OF_STREAM: Any = object()  # sentinel put on a streaming job's chunk queue when it ends


def short_error(error: BaseException, limit: int = ERROR_CHARS) -> str:
    """`ClassName: message`, trimmed to `limit` characters, for logs, records and wrapped errors."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def engine_error(error: BaseException) -> BotError:
    """What the caller sees for an exception raised inside an engine.

    Our own errors (`EngineError` and kin, `UserFacingError`) pass through; anything else is
    wrapped in `EngineError` with the original as its cause.
    """
    if isinstance(error, BotError):
        return error
    wrapped = EngineError(short_error(error))
    wrapped.__cause__ = error
    return wrapped


def name_engine(error: BaseException, engine: str, timeout_s: float | None = None) -> None:
    """Put the engine's name (and a timeout's seconds) on one of our errors, for the reply to the user."""
    if not isinstance(error, EngineError):
        return
    if error.engine is None:
        error.engine = engine
    if timeout_s is not None:
        error.timeout = timeout_s


@dataclass(frozen=True)
class EngineHealth:
    """One engine as /healthz shows it."""

    state: EngineState
    queued: int
    running: int
    completed: int
    failed: int
    last_error: str | None
    loaded: bool
    memory_mb: int


class BackgroundTasks:
    """Holds fire-and-forget tasks (recorder writes, progress callbacks) so shutdown can wait for them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def wait(self, timeout: float) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)


class SerialCalls:
    """Runs calls one at a time in the order they were added, without making the adder wait.

    Keeps a job's recorder writes (queued -> started -> finished) and its progress callbacks in
    order. A call may be sync or return an awaitable; one that fails is logged and skipped.
    """

    def __init__(self, tasks: BackgroundTasks, what: str) -> None:
        self._tasks = tasks
        self._what = what
        self._pending: deque[Callable[[], object]] = deque()
        self._runner: asyncio.Task[None] | None = None

    def add(self, call: Callable[[], object]) -> None:
        self._pending.append(call)
        if self._runner is None or self._runner.done():
            self._runner = self._tasks.spawn(self._drain(), self._what)

    async def idle(self) -> None:
        """Wait until every call added so far has run."""
        if self._runner is not None and not self._runner.done():
            await asyncio.wait({self._runner})

    async def _drain(self) -> None:
        while self._pending:
            call = self._pending.popleft()
            try:
                outcome = call()
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                log.warning("%s: a call failed", self._what, exc_info=True)


class JobOwner(Protocol):
    """The engine slot that queues and runs a job."""

    def position(self, job: Job) -> int: ...

    def finish(
        self, job: Job, status: JobStatus, *, result: Any = None, error: BaseException | None = None
    ) -> bool: ...


class Job:
    """A submitted request: its id, its queue position, cancellation and its result.

    `await job.result()` returns the engine's result or raises `EngineError` (or `EngineBusy`,
    `EngineUnavailable`, `JobTimeout`); if the awaiting task is cancelled, the job is aborted and
    the `CancelledError` goes on (vLLM's abort-on-cancel). `position` is 1 for the next job to
    run and 0 once the job has left the queue.
    """

    def __init__(
        self,
        owner: JobOwner,
        engine: str,
        payload: Any,
        *,
        event_id: str | None,
        progress: ProgressCallback | None,
        streaming: bool,
        tasks: BackgroundTasks,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.engine = engine
        self.event_id = event_id
        self.streaming = streaming
        self.status: JobStatus | None = None
        self.submitted_at = time.monotonic()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.records = SerialCalls(tasks, f"records of job {self.id}")
        self.chunks: asyncio.Queue[Any] = asyncio.Queue()
        self._owner = owner
        self._loop = asyncio.get_running_loop()
        self._future: asyncio.Future[Any] = self._loop.create_future()
        self._future.add_done_callback(_retrieve)
        self._cancelled = threading.Event()
        self._callback = progress
        self._progress = SerialCalls(tasks, f"progress of job {self.id}")
        self.request = EngineRequest(
            payload, progress=self._progress_from_engine, cancelled=self._cancelled.is_set, job_id=self.id,
            emit=self._emit_from_engine,
        )

    def __repr__(self) -> str:
        return f"<Job {self.id} engine={self.engine} status={self.status or 'pending'}>"

    @property
    def position(self) -> int:
        return self._owner.position(self)

    @property
    def done(self) -> bool:
        return self._future.done()

    @property
    def queue_s(self) -> float:
        """Seconds the job waited before it started (so far, if it has not)."""
        end = self.started_at or self.finished_at or time.monotonic()
        return end - self.submitted_at

    @property
    def run_s(self) -> float:
        """Seconds from start to finish (so far, if still running); 0 if it never started."""
        if self.started_at is None:
            return 0.0
        return (self.finished_at or time.monotonic()) - self.started_at

    def cancel(self) -> bool:
        """Drop the job from its queue, or flag it to its engine if running. False if already done."""
        return self._owner.finish(self, "cancelled")

    async def result(self) -> Any:
        try:
            await asyncio.wait({self._future})
        except asyncio.CancelledError:
            self.cancel()
            raise
        await self._progress.idle()  # the last progress note lands before the caller sees the result
        return self._future.result()

    def settle(self, status: JobStatus, result: Any, error: BaseException | None) -> None:
        """Resolve the job (called by its owner exactly once)."""
        self.status = status
        self.finished_at = time.monotonic()
        if self.timer is not None:
            self.timer.cancel()
        if status != "ok":
            self._cancelled.set()
        if status == "ok":
            self._future.set_result(result)
        elif error is None:
            self._future.cancel()
        else:
            self._future.set_exception(error)
        self.chunks.put_nowait(END_OF_STREAM)

    def push_chunk(self, chunk: Any) -> None:
        if not self.done:
            self.chunks.put_nowait(chunk)

    def _progress_from_engine(self, fraction: float, note: str = "") -> None:
        """Called by the engine from any thread; never raises into it."""
        try:
            self._loop.call_soon_threadsafe(self._deliver_progress, float(fraction), str(note))
        except Exception:  # loop closed, or a fraction that is not a number
            log.debug("job %s: progress dropped", self.id, exc_info=True)

    def _emit_from_engine(self, item: Any) -> None:
        """Called by the engine from any thread; never raises into it."""
        try:
            self._loop.call_soon_threadsafe(self.push_chunk, item)
        except Exception:  # loop closed
            log.debug("job %s: item dropped", self.id, exc_info=True)

    def _deliver_progress(self, fraction: float, note: str) -> None:
        callback = self._callback
        if callback is None or self.done:
            return
        self._progress.add(lambda: callback(fraction, note))


def _retrieve(future: asyncio.Future[Any]) -> None:
    # A job nobody awaits must not log "exception was never retrieved": the pool logs failures itself.
    if not future.cancelled():
        future.exception()


class JobStream:
    """The chunks of a streaming job as an async iterator; it ends when the job ends, raising its error.

    Leaving early: call `aclose()` or use `async with`; either cancels the job. If the consuming
    task is cancelled while waiting for a chunk, the job is cancelled too.
    """

    def __init__(self, job: Job) -> None:
        self.job = job

    def __aiter__(self) -> JobStream:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self.job.chunks.get()
        except asyncio.CancelledError:
            self.job.cancel()
            raise
        if chunk is END_OF_STREAM:
            self.job.chunks.put_nowait(END_OF_STREAM)  # stay ended for any later call
            await self.job.result()
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        self.job.cancel()

    async def __aenter__(self) -> JobStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
