"""The child side of a process worker: builds one engine and serves the parent's commands over a Pipe.

Messages, parent -> child: ("load", call), ("run", call, [(job_id, payload), ...]),
("stream", call, job_id, payload), ("unload", call), ("cancel", job_id), ("stop", 0).
Child -> parent: ("reply", call, ok, value), ("progress", job_id, fraction, note), ("chunk", call, value).
Call 0 is the start-up handshake: its reply carries the engine's `memory_mb`, or why it could not be built.
A failure travels as ("err", "Class: message", the exception itself if it is one of ours, else None).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import pickle
import queue
import signal
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from bot.errors import BotError
from engines.base import EngineRequest
from engines.jobs import short_error

Failure = tuple[str, str, BotError | None]


def build_engine(impl: str, options: dict[str, Any]) -> Any:
    """Import `impl` ("package.module:Class") and construct it with `options`."""
    module_name, _, class_name = impl.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"engine impl {impl!r} must look like 'package.module:Class'")
    engine_class = getattr(importlib.import_module(module_name), class_name)
    return engine_class(**options)


def encode_failure(error: BaseException) -> Failure:
    own = error if isinstance(error, BotError) else None
    if own is not None:
        try:
            pickle.dumps(own)
        except Exception:
            own = None
    return ("err", short_error(error), own)


class _Channel:
    """The child's end of the pipe; sends may come from any engine thread."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            self._conn.send(message)

    def reply(self, call: int, ok: bool, value: Any) -> None:
        try:
            self.send(("reply", call, ok, value))
        except Exception as e:  # a result that cannot be pickled
            self.send(("reply", call, False, encode_failure(e)))


class _Server:
    def __init__(self, engine: Any, channel: _Channel) -> None:
        self.engine = engine
        self.channel = channel
        self.cancelled: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def handle(self, message: tuple[Any, ...]) -> None:
        command, call = message[0], message[1]
        try:
            if command == "load":
                self._resolve(self.engine.load())
                value: Any = int(getattr(self.engine, "memory_mb", 0))
            elif command == "unload":
                self._resolve(self.engine.unload())
                value = None
            elif command == "run":
                value = self._run(message[2])
            elif command == "stream":
                self._stream(call, message[2], message[3])
                value = None
            else:
                raise ValueError(f"unknown command {command!r}")
        except Exception as e:
            self.channel.reply(call, False, encode_failure(e))
        else:
            self.channel.reply(call, True, value)

    def _request(self, job_id: str, payload: Any) -> EngineRequest:
        def progress(fraction: float, note: str = "") -> None:
            try:
                self.channel.send(("progress", job_id, float(fraction), str(note)))
            except Exception:
                pass  # never raise into the engine

        def cancelled() -> bool:
            return job_id in self.cancelled

        return EngineRequest(payload, progress=progress, cancelled=cancelled, job_id=job_id)

    def _run(self, items: list[tuple[str, Any]]) -> list[Any]:
        try:
            results = self._resolve(self.engine.run([self._request(job_id, p) for job_id, p in items]))
        finally:
            self.cancelled.difference_update(job_id for job_id, _ in items)
        return [encode_failure(r) if isinstance(r, BaseException) else ("ok", r) for r in results]

    def _stream(self, call: int, job_id: str, payload: Any) -> None:
        request = self._request(job_id, payload)
        try:
            for chunk in self._chunks(request):
                self.channel.send(("chunk", call, chunk))
                if request.cancelled():
                    break
        finally:
            self.cancelled.discard(job_id)

    def _chunks(self, request: EngineRequest) -> Iterator[Any]:
        stream = getattr(self.engine, "stream", None)
        if stream is None:
            result = self._resolve(self.engine.run([request]))[0]
            if isinstance(result, BaseException):
                raise result
            yield result
            return
        produced = stream(request)
        if hasattr(produced, "__anext__"):
            while True:
                try:
                    yield self._resolve(produced.__anext__())
                except StopAsyncIteration:
                    return
        yield from produced

    def _resolve(self, value: Any) -> Any:
        """The value itself, or what it resolves to if the engine returned an awaitable."""
        if not inspect.isawaitable(value):
            return value
        if self._loop is None:
            self._loop = asyncio.new_event_loop()

        async def wait() -> Any:
            return await value

        return self._loop.run_until_complete(wait())


def _receive(conn: Connection, commands: queue.Queue[tuple[Any, ...] | None], server: _Server) -> None:
    """Reads the pipe so a cancel reaches a batch that is running on the main thread."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # the parent is gone: nobody is waiting for us
        if message[0] == "cancel":
            server.cancelled.add(message[1])
        elif message[0] == "stop":
            commands.put(None)
            return
        else:
            commands.put(message)


def serve(conn: Connection, impl: str, options: dict[str, Any]) -> None:
    """The child process's entry point (multiprocessing target)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    channel = _Channel(conn)
    try:
        engine = build_engine(impl, options)
    except BaseException as e:
        channel.reply(0, False, encode_failure(e))
        return
    channel.reply(0, True, int(getattr(engine, "memory_mb", 0)))
    server = _Server(engine, channel)
    commands: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
    threading.Thread(target=_receive, args=(conn, commands, server), name="pipe-reader", daemon=True).start()
    while (message := commands.get()) is not None:
        server.handle(message)
