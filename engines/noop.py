"""An engine that returns its input: for /ping, health checks and the router benchmark."""

from __future__ import annotations

from typing import Any

from engines.base import EngineRequest


class NoopEngine:
    """Echoes each payload; batches freely and needs no memory."""

    name = "noop"
    memory_mb = 0

    def __init__(self, **options: Any) -> None:
        self.options = options

    def load(self) -> None:
        return None

    def run(self, batch: list[EngineRequest]) -> list[Any]:
        return [request.payload for request in batch]

    def unload(self) -> None:
        return None
