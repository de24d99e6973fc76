"""Where an engine's code runs: in this process (threads, or the loop for coroutine engines) or in a child.

A worker owns one engine instance. The slot above it decides when to load, run and unload; the
worker only knows how. `ThreadWorker` is here; `ProcessWorker` (engines.process_worker) raises
`WorkerDied` when its child exits mid-call.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, Protocol

from bot.errors import EngineUnavailable
from bot.settings import EngineSettings
from engines.base import EngineRequest
from engines.process_child import build_engine

log = logging.getLogger(__name__)

Emit = Callable[[Any], None]


class WorkerDied(EngineUnavailable):
    """The worker process exited while the pool needed it."""


class Worker(Protocol):
    @property
    def alive(self) -> bool: ...

    @property
    def busy(self) -> bool: ...

    async def prepare(self) -> int:
        """Import and construct the engine (or start the child that does); return its `memory_mb`."""
        ...

    async def load(self) -> int:
        """Load the engine; return its `memory_mb` as it reports it after loading."""
        ...

    async def run(self, batch: list[EngineRequest]) -> list[Any]: ...

    async def stream(self, request: EngineRequest, emit: Emit) -> None:
        """Call `emit(chunk)` on the loop for each chunk, in order."""
        ...

    def cancel(self, job_id: str) -> None:
        """Tell the engine that a running job is cancelled (threads read the flag directly)."""
        ...

    async def unload(self) -> None: ...

    async def close(self) -> None: ...


def make_worker(name: str, settings: EngineSettings, executor: Executor) -> Worker:
    if settings.worker == "process":
        from engines.process_worker import ProcessWorker  # multiprocessing only when an engine asks for it

        return ProcessWorker(name, settings, executor)
    return ThreadWorker(name, settings, executor)


class ThreadWorker:
    """Runs a sync engine in the pool's threads; coroutine methods (`async def run`) run on the loop."""

    def __init__(self, name: str, settings: EngineSettings, executor: Executor) -> None:
        self._name = name
        self._settings = settings
        self._executor = executor
        self._engine: Any = None
        self._loaded = False
        self._threads_lock = threading.Lock()
        self._in_threads = 0  # calls still running in a thread, even if their caller gave up

    @property
    def alive(self) -> bool:
        return True

    @property
    def busy(self) -> bool:
        with self._threads_lock:
            return self._in_threads > 0

    async def prepare(self) -> int:
        if self._engine is None:
            self._engine = await self._in_thread(build_engine, self._settings.impl, self._settings.options)
        return int(getattr(self._engine, "memory_mb", 0))

    async def load(self) -> int:
        await self._call(self._engine.load)
        self._loaded = True
        return int(getattr(self._engine, "memory_mb", 0))

    async def run(self, batch: list[EngineRequest]) -> list[Any]:
        return list(await self._call(self._engine.run, batch))

    async def stream(self, request: EngineRequest, emit: Emit) -> None:
        stream = getattr(self._engine, "stream", None)
        if stream is None:
            result = (await self.run([request]))[0]
            if isinstance(result, BaseException):
                raise result
            emit(result)
        elif inspect.isasyncgenfunction(stream):
            async with contextlib.aclosing(stream(request)) as chunks:
                async for chunk in chunks:
                    emit(chunk)
                    if request.cancelled():
                        break
        else:
            loop = asyncio.get_running_loop()

            def drive() -> None:
                chunks = stream(request)
                try:
                    for chunk in chunks:
                        loop.call_soon_threadsafe(emit, chunk)
                        if request.cancelled():
                            break
                finally:
                    close = getattr(chunks, "close", None)
                    if close is not None:
                        close()

            await self._in_thread(drive)

    def cancel(self, job_id: str) -> None:
        return None

    async def unload(self) -> None:
        if self._engine is None or not self._loaded:
            return
        if self.busy:
            log.warning("engine %s is still running in a thread; not unloading it", self._name)
            return
        self._loaded = False
        await self._call(self._engine.unload)

    async def close(self) -> None:
        await self.unload()
        if not self.busy:
            self._engine = None

    async def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        if inspect.iscoroutinefunction(method):
            return await method(*args)
        return await self._in_thread(method, *args)

    async def _in_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        future = self._executor.submit(function, *args)
        with self._threads_lock:
            self._in_threads += 1
        future.add_done_callback(self._thread_done)
        return await asyncio.wrap_future(future)

    def _thread_done(self, future: Future[Any]) -> None:
        with self._threads_lock:
            self._in_threads -= 1
