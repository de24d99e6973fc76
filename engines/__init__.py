"""Engines and the pool that runs them: see `engines.base` (the Engine protocol) and `engines.pool`."""

from __future__ import annotations

from engines.base import Engine, EngineRequest, JobRecorder, NullRecorder, StreamingEngine
from engines.jobs import EngineHealth, Job, JobStatus, JobStream, ProgressCallback
from engines.pool import EnginePool, LocalEnginePool, create_pool

__all__ = [
    "Engine",
    "EngineHealth",
    "EnginePool",
    "EngineRequest",
    "Job",
    "JobRecorder",
    "JobStatus",
    "JobStream",
    "LocalEnginePool",
    "NullRecorder",
    "ProgressCallback",
    "StreamingEngine",
    "create_pool",
]
