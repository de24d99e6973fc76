"""The parent side of a process worker: a child per engine (spawn), driven over a Pipe.

See `engines.process_child` for the child and the message format.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from bot.errors import EngineError
from bot.settings import EngineSettings
from engines import process_child
from engines.base import EngineRequest
from engines.workers import Emit, WorkerDied

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0


class ProcessWorker:
    """Runs the engine in a child process (spawn), so a crash there costs one batch, not the service.

    A reader thread turns the child's messages into calls on the loop. If the child dies, every
    pending call fails with `WorkerDied`; the next `prepare` starts a fresh child.
    """

    def __init__(self, name: str, settings: EngineSettings, executor: Executor) -> None:
        self._name = name
        self._settings = settings
        self._executor = executor
        self._conn: Connection | None = None
        self._process: BaseProcess | None = None
        self._reader: threading.Thread | None = None
        self._memory_mb = 0
        self._call_ids = itertools.count(1)
        self._calls: dict[int, asyncio.Future[tuple[bool, Any]]] = {}
        self._emitters: dict[int, Emit] = {}
        self._requests: dict[str, EngineRequest] = {}

    @property
    def alive(self) -> bool:
        return self._conn is not None

    @property
    def busy(self) -> bool:
        return bool(self._calls)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def prepare(self) -> int:
        if self.alive:
            return self._memory_mb
        loop = asyncio.get_running_loop()
        context = multiprocessing.get_context("spawn")
        parent_end, child_end = context.Pipe()
        process = context.Process(
            target=process_child.serve,
            args=(child_end, self._settings.impl, self._settings.options),
            name=f"engine-{self._name}",
            daemon=True,
        )
        handshake: asyncio.Future[tuple[bool, Any]] = loop.create_future()
        self._calls[0] = handshake
        try:
            await loop.run_in_executor(self._executor, process.start)
        except BaseException:
            self._calls.pop(0, None)
            parent_end.close()
            raise
        finally:
            child_end.close()
        self._conn, self._process = parent_end, process
        self._reader = threading.Thread(
            target=self._read, args=(parent_end, process, loop), name=f"engine-{self._name}-pipe", daemon=True
        )
        self._reader.start()
        log.info("engine %s: started worker process %s", self._name, process.pid)
        try:
            self._memory_mb = int(await self._answer(0, handshake))
        except BaseException:
            await self.close()
            raise
        return self._memory_mb

    async def load(self) -> int:
        self._memory_mb = int(await self._call("load"))
        return self._memory_mb

    async def run(self, batch: list[EngineRequest]) -> list[Any]:
        for request in batch:
            self._requests[request.job_id] = request
        try:
            items = await self._call("run", [(r.job_id, r.payload) for r in batch])
        finally:
            for request in batch:
                self._requests.pop(request.job_id, None)
        return [item[1] if item[0] == "ok" else _failure(item) for item in items]

    async def stream(self, request: EngineRequest, emit: Emit) -> None:
        self._requests[request.job_id] = request
        try:
            await self._call("stream", request.job_id, request.payload, emit=emit)
        finally:
            self._requests.pop(request.job_id, None)

    def cancel(self, job_id: str) -> None:
        if self._conn is not None and job_id in self._requests:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(("cancel", job_id))

    async def unload(self) -> None:
        """Unload in the child, then stop it: only the end of the process frees everything."""
        if self.alive:
            try:
                await asyncio.wait_for(self._call("unload"), STOP_TIMEOUT_S)
            except Exception:
                log.warning("engine %s: unload in the worker process failed", self._name, exc_info=True)
        await self.close()

    async def close(self) -> None:
        conn, process, reader = self._conn, self._process, self._reader
        self._conn = self._process = self._reader = None
        self._fail_pending(WorkerDied(f"the worker process of engine {self._name} was stopped"))
        if conn is None or process is None or reader is None:
            return
        with contextlib.suppress(OSError, ValueError):
            conn.send(("stop", 0))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, reader.join, STOP_TIMEOUT_S)
        if reader.is_alive():
            log.warning("engine %s: worker process %s did not stop; killing it", self._name, process.pid)
            process.kill()
            await loop.run_in_executor(self._executor, reader.join, STOP_TIMEOUT_S)

    async def _call(self, command: str, *args: Any, emit: Emit | None = None) -> Any:
        conn = self._conn
        if conn is None:
            raise WorkerDied(f"the worker process of engine {self._name} is not running")
        call = next(self._call_ids)
        answer: asyncio.Future[tuple[bool, Any]] = asyncio.get_running_loop().create_future()
        self._calls[call] = answer
        if emit is not None:
            self._emitters[call] = emit
        try:
            try:
                conn.send((command, call, *args))
            except (OSError, ValueError) as e:  # ValueError: the reader closed the pipe
                raise WorkerDied(f"the worker process of engine {self._name} is gone") from e
            return await self._answer(call, answer)
        finally:
            self._calls.pop(call, None)
            self._emitters.pop(call, None)

    async def _answer(self, call: int, answer: asyncio.Future[tuple[bool, Any]]) -> Any:
        try:
            ok, value = await answer
        finally:
            self._calls.pop(call, None)
        if not ok:
            raise _failure(value)
        return value

    def _read(self, conn: Connection, process: BaseProcess, loop: asyncio.AbstractEventLoop) -> None:
        """Reader thread: forwards messages to the loop until the child's end closes."""
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            except Exception:
                log.exception("engine %s: unreadable message from the worker process", self._name)
                continue
            if not _post(loop, self._dispatch, conn, message):
                break
        process.join(STOP_TIMEOUT_S)
        if process.exitcode is None:
            process.kill()
            process.join()
        conn.close()
        _post(loop, self._exited, conn, process.exitcode)

    def _dispatch(self, conn: Connection, message: tuple[Any, ...]) -> None:
        if conn is not self._conn:
            return  # from a child we already stopped
        kind = message[0]
        if kind == "reply":
            answer = self._calls.get(message[1])
            if answer is not None and not answer.done():
                answer.set_result((message[2], message[3]))
        elif kind == "progress":
            request = self._requests.get(message[1])
            if request is not None:
                request.progress(message[2], message[3])
        elif kind == "chunk":
            emit = self._emitters.get(message[1])
            if emit is not None:
                emit(message[2])

    def _exited(self, conn: Connection, exitcode: int | None) -> None:
        if conn is not self._conn:
            return
        self._conn = self._process = self._reader = None
        log.error("engine %s: worker process exited unexpectedly (exit code %s)", self._name, exitcode)
        error = WorkerDied(f"the worker process of engine {self._name} died (exit code {exitcode})")
        self._fail_pending(error)

    def _fail_pending(self, error: WorkerDied) -> None:
        for answer in self._calls.values():
            if not answer.done():
                answer.set_exception(error)
        self._calls.clear()


def _failure(item: tuple[str, str, Exception | None]) -> Exception:
    _, text, own = item
    return own if own is not None else EngineError(text)


def _post(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> bool:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the loop is closed
        return False
    return True
