"""Prometheus metrics, held in one registry per service instance (no module globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """Every metric the service exports at /metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("bot_events", "Events received", ["platform", "kind"], registry=r)
        self.dropped = Counter("bot_events_dropped", "Events dropped by middleware", ["reason"], registry=r)
        self.handler_seconds = Histogram(
            "bot_handler_seconds", "Handler latency", ["handler"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.errors = Counter("bot_errors", "Errors shown to users or logged", ["where"], registry=r)
        self.queue_depth = Gauge("bot_engine_queue_depth", "Jobs waiting per engine", ["engine"], registry=r)
        self.running = Gauge("bot_engine_running", "Jobs running per engine", ["engine"], registry=r)
        self.job_seconds = Histogram(
            "bot_job_seconds", "Engine job run time", ["engine", "status"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_seconds = Histogram(
            "bot_job_queue_seconds", "Time a job waited in its queue", ["engine"], buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "bot_engine_batch_size", "Requests merged per engine call", ["engine"],
            buckets=(1, 2, 4, 8, 16, 32, 64), registry=r,
        )
        self.engine_loaded = Gauge("bot_engine_loaded", "1 when the engine is loaded", ["engine"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
