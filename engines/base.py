"""The Engine protocol: what the pool needs from anything that computes.

Engines know nothing of chat platforms. A synchronous engine's `run` is called in a worker
thread or a worker process; an engine whose `run` is a coroutine function (HTTP-backed ones:
OpenAI, Azure, D-ID) is awaited on the event loop. Either may also offer `stream`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

ProgressFn = Callable[[float, str], None]


@dataclass
class EngineRequest:
    """One job's input as an engine sees it.

    `progress(fraction, note)` may be called from any thread. `cancelled()` turns true once the
    job is cancelled or timed out; long loops should check it and stop early. `emit(item)` (any
    thread) hands the caller an intermediate item (an image preview) on the job's chunk queue,
    which a caller of `pool.submit` reads with `JobStream(job)` before it awaits `job.result()`.
    """

    payload: Any
    progress: ProgressFn = field(default=lambda fraction, note: None, repr=False)
    emit: Callable[[Any], None] = field(default=lambda item: None, repr=False)
    cancelled: Callable[[], bool] = field(default=lambda: False, repr=False)
    job_id: str = ""


def run_each(one: Callable[[EngineRequest], Any], batch: list[EngineRequest]) -> list[Any]:
    """`one(request)` for each request of a batch in turn; an exception becomes that request's result."""
    results: list[Any] = []
    for request in batch:
        try:
            results.append(one(request))
        except Exception as e:  # fails only this request
            results.append(e)
    return results


@runtime_checkable
class Engine(Protocol):
    """Something the pool can load, run in batches and unload.

    `run` returns one result per request, in order; a result that is an `Exception` fails
    only that request. `memory_mb` is the estimate used for the pool's memory budget.
    """

    name: str
    memory_mb: int

    def load(self) -> None: ...

    def run(self, batch: list[EngineRequest]) -> list[Any]: ...

    def unload(self) -> None: ...


class StreamingEngine(Engine, Protocol):
    """An engine that can also yield partial results for one request (tokens, audio chunks)."""

    def stream(self, request: EngineRequest) -> Iterator[Any] | AsyncIterator[Any]: ...


class JobRecorder(Protocol):
    """Where the pool records each job (the `job` table in production)."""

    async def job_queued(self, job_id: str, engine: str, event_id: str | None) -> None: ...

    async def job_started(self, job_id: str, queue_s: float) -> None: ...

    async def job_finished(
        self, job_id: str, status: str, run_s: float, error: str | None = None
    ) -> None: ...


class NullRecorder:
    """Records nothing; for benchmarks and tools that run without a database."""

    async def job_queued(self, job_id: str, engine: str, event_id: str | None) -> None:
        return None

    async def job_started(self, job_id: str, queue_s: float) -> None:
        return None

    async def job_finished(self, job_id: str, status: str, run_s: float, error: str | None = None) -> None:
        return None
