"""Engines the integration tests put behind real commands, to show failures reach the user."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from engines.base import EngineRequest


class SleepEngine:
    """Sleeps `payload` seconds per request (checking for cancellation), then answers "slept"."""

    name = "sleep"
    memory_mb = 0

    def __init__(self, **options: Any) -> None:
        self.options = options

    def load(self) -> None:
        return None

    def run(self, batch: list[EngineRequest]) -> list[Any]:
        for request in batch:
            deadline = time.monotonic() + float(request.payload)
            while time.monotonic() < deadline and not request.cancelled():
                time.sleep(0.01)
        return ["slept" for _ in batch]

    def unload(self) -> None:
        return None


class CrashEngine(SleepEngine):
    """Raises on every request."""

    name = "crash"

    def run(self, batch: list[EngineRequest]) -> list[Any]:
        raise RuntimeError("model exploded")


class SuicideEngine(SleepEngine):
    """Kills its own worker process on the payload "die"; answers "alive" otherwise."""

    name = "suicide"

    def run(self, batch: list[EngineRequest]) -> list[Any]:
        if any(r.payload == "die" for r in batch):
            os.kill(os.getpid(), signal.SIGKILL)
        return ["alive" for _ in batch]
