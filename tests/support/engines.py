"""Small engines for pool tests, importable as `tests.support.engines:ClassName` (also by a worker process).

Thread-worker engines report what they saw through a `Probe` passed in their options; the
process-worker engine reports through its results, progress notes and marker files.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from engines.base import EngineRequest

MODULE = "tests.support.engines"
GATE_LIMIT_S = 10.0  # a gated run never outlives a test, even if nobody opens the gate


class Probe:
    """What thread-worker engines did, shared with the test that made them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.batches: list[list[Any]] = []
        self.events: list[str] = []
        self.load_attempts = 0
        self.active = 0
        self.max_active = 0
        self.started = threading.Event()
        self.release = threading.Event()
        self.cancel_seen = threading.Event()

    def note(self, event: str) -> None:
        with self.lock:
            self.events.append(event)


class EchoEngine:
    """Returns each payload; "bad" gives a per-result ValueError. Counts its batches."""

    def __init__(
        self, name: str = "echo", memory_mb: int = 0, probe: Probe | None = None, delay_s: float = 0
    ) -> None:
        self.name = name
        self.memory_mb = memory_mb
        self.probe = probe or Probe()
        self.delay_s = delay_s

    def load(self) -> None:
        self.probe.note(f"load:{self.name}")

    def run(self, batch: list[EngineRequest]) -> list[Any]:
        self.probe.batches.append([r.payload for r in batch])
        time.sleep(self.delay_s)
        return [ValueError("bad payload") if r.payload == "bad" else r.payload for r in batch]

    def unload(self) -> None:
        self.probe.note(f"unload:{self.name}")


class FailingEngine(EchoEngine):
    """Raises for the payload "boom"; echoes anything else."""

    def run(self, batch: list[EngineRequest]) -> list[Any]:
        if any(r.payload == "boom" for r in batch):
            raise RuntimeError("engine exploded")
        return super().run(batch)


class GatedEngine(EchoEngine):
    """Holds its batch until `probe.release` is set or every request is cancelled."""

    def run(self, batch: list[EngineRequest]) -> list[Any]:
        with self.probe.lock:
            self.probe.batches.append([r.payload for r in batch])
            self.probe.active += 1
            self.probe.max_active = max(self.probe.max_active, self.probe.active)
        self.probe.started.set()
        deadline = time.monotonic() + GATE_LIMIT_S
        try:
            while not self.probe.release.wait(0.01) and time.monotonic() < deadline:
                if all(r.cancelled() for r in batch):
                    self.probe.cancel_seen.set()
                    break
            return [r.payload for r in batch]
        finally:
            with self.probe.lock:
                self.probe.active -= 1


class ProgressEngine(EchoEngine):
    """Reports `payload` steps of progress, then returns "done"."""

    def run(self, batch: list[EngineRequest]) -> list[Any]:
        for request in batch:
            for step in range(1, request.payload + 1):
                request.progress(step / request.payload, f"step {step}")
        return ["done" for _ in batch]


class FlakyLoadEngine(EchoEngine):
    """Fails its first `failures` loads (counted in the probe, across instances)."""

    def __init__(self, failures: int = 1, **options: Any) -> None:
        super().__init__(**options)
        self.failures = failures

    def load(self) -> None:
        with self.probe.lock:
            self.probe.load_attempts += 1
            attempt = self.probe.load_attempts
        time.sleep(0.05)
        if attempt <= self.failures:
            raise RuntimeError("weights missing")
        super().load()


class AsyncEngine:
    """An HTTP-style engine: `run` is a coroutine function; returns the thread it ran on."""

    name = "async"
    memory_mb = 0

    def load(self) -> None:
        return None

    async def run(self, batch: list[EngineRequest]) -> list[Any]:
        await asyncio.sleep(0.01)
        return [(r.payload, threading.current_thread().name) for r in batch]

    def unload(self) -> None:
        return None


class WordStreamEngine(EchoEngine):
    """Streams the words of its payload from a sync generator; "boom" fails after the first word."""

    def stream(self, request: EngineRequest) -> Iterator[str]:
        for word in str(request.payload).split():
            if word == "boom":
                raise ValueError("stream broke")
            yield word


class AsyncWordStreamEngine(EchoEngine):
    """Streams the words of its payload from an async generator."""

    async def stream(self, request: EngineRequest) -> AsyncIterator[str]:
        for word in str(request.payload).split():
            await asyncio.sleep(0)
            yield word


class ProcessEngine:
    """Meant for a process worker. Payloads: "pid" -> its pid; "die" -> SIGKILL itself;
    "boom" -> ValueError; "progress" -> three notes then "done"; "wait:<path>" -> run until
    cancelled, then write <path>. `stream` yields the words of the payload."""

    name = "proc"
    memory_mb = 0

    def load(self) -> None:
        return None

    def run(self, batch: list[EngineRequest]) -> list[Any]:
        return [self._one(request) for request in batch]

    def _one(self, request: EngineRequest) -> Any:
        payload = str(request.payload)
        if payload == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        if payload == "boom":
            raise ValueError("boom")
        if payload == "progress":
            for step in (1, 2, 3):
                request.progress(step / 3, f"step {step}")
            return "done"
        if payload.startswith("wait:"):
            deadline = time.monotonic() + GATE_LIMIT_S
            while not request.cancelled() and time.monotonic() < deadline:
                time.sleep(0.01)
            Path(payload[5:]).write_text("cancelled" if request.cancelled() else "gave up")
            return "waited"
        return os.getpid()

    def stream(self, request: EngineRequest) -> Iterator[str]:
        yield from str(request.payload).split()

    def unload(self) -> None:
        return None


class RendezvousStreamEngine(EchoEngine):
    """Each stream waits until `payload` streams are in flight at once, then yields "met"."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.in_flight = 0

    async def stream(self, request: EngineRequest) -> AsyncIterator[str]:
        self.in_flight += 1
        deadline = asyncio.get_running_loop().time() + 2
        while self.in_flight < int(request.payload) and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        yield "met" if self.in_flight >= int(request.payload) else "alone"
