"""The engine pool as scenarios: queues, batches, memory, time limits, cancellation, crashes, shutdown."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.errors import EngineBusy, EngineError, EngineUnavailable, JobTimeout, UnknownEngine
from bot.metrics import Metrics
from bot.settings import EngineSettings, PoolSettings, default_engines
from engines import EnginePool, LocalEnginePool, create_pool
from tests.support.engines import MODULE, Probe

MakePool = Callable[..., Awaitable[LocalEnginePool]]


class RecordingRecorder:
    """A JobRecorder that remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def job_queued(self, job_id: str, engine: str, event_id: str | None) -> None:
        self.calls.append(("queued", job_id, engine, event_id))

    async def job_started(self, job_id: str, queue_s: float) -> None:
        self.calls.append(("started", job_id, queue_s))

    async def job_finished(self, job_id: str, status: str, run_s: float, error: str | None = None) -> None:
        self.calls.append(("finished", job_id, status, run_s, error))

    def of(self, job_id: str) -> list[tuple[Any, ...]]:
        return [call for call in self.calls if call[1] == job_id]

    def status(self, job_id: str) -> str | None:
        return next((call[2] for call in self.of(job_id) if call[0] == "finished"), None)


class BrokenRecorder:
    async def job_queued(self, job_id: str, engine: str, event_id: str | None) -> None:
        raise ConnectionError("database down")

    async def job_started(self, job_id: str, queue_s: float) -> None:
        raise ConnectionError("database down")

    async def job_finished(self, job_id: str, status: str, run_s: float, error: str | None = None) -> None:
        raise ConnectionError("database down")


def engine(cls: str, *, probe: Probe | None = None, **settings: Any) -> EngineSettings:
    options = dict(settings.pop("options", {}))
    if probe is not None:
        options["probe"] = probe
    return EngineSettings(impl=f"{MODULE}:{cls}", options=options, **settings)


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def make_pool() -> AsyncIterator[MakePool]:
    made: list[LocalEnginePool] = []

    async def make(
        engines: dict[str, EngineSettings],
        recorder: Any = None,
        metrics: Metrics | None = None,
        **pool_settings: Any,
    ) -> LocalEnginePool:
        pool = create_pool(engines, PoolSettings(**pool_settings), recorder or RecordingRecorder(), metrics)
        await pool.start()
        made.append(pool)
        return pool

    yield make
    for pool in made:
        await pool.close(drain_timeout=0)


# --- queues


async def test_full_queue_raises_engine_busy_at_once(make_pool: MakePool) -> None:
    probe = Probe()
    pool = await make_pool({"gated": engine("GatedEngine", probe=probe, queue_size=2)})
    running = pool.submit("gated", 1)
    await eventually(probe.started.is_set)
    queued = [pool.submit("gated", 2), pool.submit("gated", 3)]
    assert (running.position, queued[0].position, queued[1].position) == (0, 1, 2)

    with pytest.raises(EngineBusy):
        pool.submit("gated", 4)
    assert pool.queue_depth("gated") == 2

    probe.release.set()
    assert [await job.result() for job in (running, *queued)] == [1, 2, 3]


async def test_cancelling_a_queued_job_frees_its_slot(make_pool: MakePool) -> None:
    probe = Probe()
    recorder = RecordingRecorder()
    pool = await make_pool({"gated": engine("GatedEngine", probe=probe, queue_size=2)}, recorder)
    running = pool.submit("gated", 1)
    await eventually(probe.started.is_set)
    second, third = pool.submit("gated", 2), pool.submit("gated", 3)

    assert third.cancel() is True
    assert pool.queue_depth("gated") == 1
    replacement = pool.submit("gated", 4)  # EngineBusy if the slot were still taken
    assert replacement.position == 2

    probe.release.set()
    assert [await job.result() for job in (running, second, replacement)] == [1, 2, 4]
    with pytest.raises(asyncio.CancelledError):
        await third.result()
    await eventually(lambda: recorder.status(third.id) == "cancelled")
    assert probe.batches == [[1], [2], [4]]


async def test_unknown_engine_and_the_builtin_noop(make_pool: MakePool) -> None:
    pool: EnginePool = await make_pool({})  # (mypy: the local pool meets the protocol)
    assert await pool.run("noop", {"x": 1}) == {"x": 1}
    assert set(pool.health()) == set(default_engines())  # builtins present, none loaded
    assert all(not h.loaded for name, h in pool.health().items() if name != "noop")
    with pytest.raises(UnknownEngine):
        pool.submit("nope", 1)


# --- batching


async def test_concurrent_requests_merge_into_one_batch(make_pool: MakePool) -> None:
    probe = Probe()
    metrics = Metrics()
    pool = await make_pool(
        {"echo": engine("EchoEngine", probe=probe, max_batch=8, batch_wait_ms=200)}, metrics=metrics
    )
    results = await asyncio.gather(*(pool.run("echo", i) for i in range(8)))
    assert results == list(range(8))
    assert probe.batches == [list(range(8))]
    assert metrics.registry.get_sample_value("bot_engine_batch_size_sum", {"engine": "echo"}) == 8


async def test_batch_waits_for_late_requests_up_to_max_batch(make_pool: MakePool) -> None:
    probe = Probe()
    pool = await make_pool({"echo": engine("EchoEngine", probe=probe, max_batch=3, batch_wait_ms=300)})
    await pool.run("echo", "warm-up")  # loaded, so the next batch starts at once

    first = pool.submit("echo", "a")
    await asyncio.sleep(0.05)
    late = [pool.submit("echo", x) for x in ("b", "c", "d")]
    assert [await job.result() for job in (first, *late)] == ["a", "b", "c", "d"]
    assert probe.batches[1:] == [["a", "b", "c"], ["d"]]


async def test_a_failed_result_fails_only_its_job(make_pool: MakePool) -> None:
    probe = Probe()
    pool = await make_pool({"echo": engine("EchoEngine", probe=probe, max_batch=4, batch_wait_ms=100)})
    jobs = [pool.submit("echo", payload) for payload in ("a", "bad", "c")]
    assert await jobs[0].result() == "a"
    assert await jobs[2].result() == "c"
    with pytest.raises(EngineError, match="ValueError: bad payload") as failure:
        await jobs[1].result()
    assert isinstance(failure.value.__cause__, ValueError)
    assert probe.batches == [["a", "bad", "c"]]


# --- failures


async def test_raising_engine_fails_its_job_while_another_engine_completes(make_pool: MakePool) -> None:
    recorder = RecordingRecorder()
    pool = await make_pool(
        {
            "failing": engine("FailingEngine"),
            "slow": engine("EchoEngine", options={"delay_s": 0.2}),
        },
        recorder,
    )
    healthy = asyncio.create_task(pool.run("slow", "fine"))
    doomed = pool.submit("failing", "boom")
    with pytest.raises(EngineError) as failure:
        await doomed.result()
    assert str(failure.value) == "RuntimeError: engine exploded"
    assert isinstance(failure.value.__cause__, RuntimeError)
    assert vars(failure.value)["engine"] == "failing"  # the dispatcher names it to the user
    assert await healthy == "fine"
    assert await pool.run("failing", "next") == "next"  # the engine keeps serving

    health = pool.health()["failing"]
    assert (health.state, health.completed, health.failed) == ("ready", 1, 1)
    await eventually(lambda: recorder.status(doomed.id) == "error")
    assert recorder.of(doomed.id)[-1][4] == "EngineError: RuntimeError: engine exploded"


async def test_load_failure_fails_waiting_jobs_then_the_next_job_retries(make_pool: MakePool) -> None:
    probe = Probe()
    pool = await make_pool({"flaky": engine("FlakyLoadEngine", probe=probe)})
    waiting = [pool.submit("flaky", i) for i in range(3)]
    for job in waiting:
        with pytest.raises(EngineUnavailable, match="weights missing"):
            await job.result()
    health = pool.health()["flaky"]
    assert health.state == "failed"
    assert health.last_error == "RuntimeError: weights missing"

    assert await pool.run("flaky", "again") == "again"
    assert pool.health()["flaky"].state == "ready"
    assert probe.load_attempts == 2


async def test_recorder_failures_never_fail_the_job(
    make_pool: MakePool, caplog: pytest.LogCaptureFixture
) -> None:
    pool = await make_pool({"echo": engine("EchoEngine")}, BrokenRecorder())
    with caplog.at_level(logging.WARNING, logger="engines.jobs"):
        assert await pool.run("echo", "still fine") == "still fine"
        await eventually(lambda: sum("records of job" in r.getMessage() for r in caplog.records) >= 3)


async def test_every_job_is_recorded_in_order(make_pool: MakePool) -> None:
    recorder = RecordingRecorder()
    pool = await make_pool({"echo": engine("EchoEngine")}, recorder)
    job = pool.submit("echo", "hi", event_id="ev-1")
    assert await job.result() == "hi"
    await eventually(lambda: len(recorder.of(job.id)) == 3)
    queued, started, finished = recorder.of(job.id)
    assert queued == ("queued", job.id, "echo", "ev-1")
    assert started[0] == "started" and started[2] >= 0
    assert finished[0] == "finished" and finished[2] == "ok" and finished[4] is None
    assert len(job.id) == 32 and job.engine == "echo"


# --- time limits and cancellation


async def test_timeout_raises_job_timeout_and_flags_the_request(make_pool: MakePool) -> None:
    probe = Probe()
    recorder = RecordingRecorder()
    patient = Probe()
    pool = await make_pool(
        {
            "gated": engine("GatedEngine", probe=probe, timeout_s=0.2),
            "patient": engine("GatedEngine", probe=patient, timeout_s=60),
        },
        recorder,
    )
    job = pool.submit("gated", 1)  # the engine's own timeout_s
    with pytest.raises(JobTimeout) as timeout:
        await job.result()
    assert vars(timeout.value) == {"engine": "gated", "timeout": 0.2}
    await eventually(probe.cancel_seen.is_set)
    await eventually(lambda: recorder.status(job.id) == "timeout")

    with pytest.raises(JobTimeout):
        await pool.run("patient", 2, timeout=0.1)  # the caller's timeout wins
    await eventually(patient.cancel_seen.is_set)


async def test_cancelling_a_running_job_flags_the_request(make_pool: MakePool) -> None:
    probe = Probe()
    recorder = RecordingRecorder()
    pool = await make_pool({"gated": engine("GatedEngine", probe=probe)}, recorder)
    job = pool.submit("gated", 1)
    await eventually(probe.started.is_set)
    assert job.position == 0
    assert job.cancel() is True
    assert job.cancel() is False
    await eventually(probe.cancel_seen.is_set)
    with pytest.raises(asyncio.CancelledError):
        await job.result()
    await eventually(lambda: recorder.status(job.id) == "cancelled")


async def test_cancelling_the_awaiting_task_aborts_the_job(make_pool: MakePool) -> None:
    probe = Probe()
    pool = await make_pool({"gated": engine("GatedEngine", probe=probe)})
    task = asyncio.create_task(pool.run("gated", 1))
    await eventually(probe.started.is_set)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(probe.cancel_seen.is_set)
    assert pool.health()["gated"].running == 0


# --- progress


async def test_progress_arrives_in_order_and_a_failing_callback_is_harmless(make_pool: MakePool) -> None:
    pool = await make_pool({"progress": engine("ProgressEngine")})
    seen: list[tuple[float, str]] = []
    assert await pool.run("progress", 4, progress=lambda f, note: seen.append((f, note))) == "done"
    assert seen == [(0.25, "step 1"), (0.5, "step 2"), (0.75, "step 3"), (1.0, "step 4")]

    notes: list[str] = []

    async def slow_callback(fraction: float, note: str) -> None:
        await asyncio.sleep(0.01)
        notes.append(note)

    assert await pool.run("progress", 3, progress=slow_callback) == "done"
    assert notes == ["step 1", "step 2", "step 3"]

    def broken(fraction: float, note: str) -> None:
        raise RuntimeError("chat platform down")

    assert await pool.run("progress", 2, progress=broken) == "done"


# --- memory


async def test_least_recently_used_engine_is_unloaded_to_fit_the_budget(make_pool: MakePool) -> None:
    probe = Probe()
    engines = {
        "a": engine("EchoEngine", probe=probe, options={"name": "a", "memory_mb": 100}),
        "b": engine("EchoEngine", probe=probe, options={"name": "b", "memory_mb": 100}),
        "c": engine("EchoEngine", probe=probe, options={"name": "c"}, memory_mb=100),
    }
    pool = await make_pool(engines, memory_budget_mb=200)
    assert pool.health()["a"].state == "unloaded"
    for name in ("a", "b", "a"):
        await pool.run(name, name)
    assert probe.events == ["load:a", "load:b"]

    await pool.run("c", "c")
    assert probe.events == ["load:a", "load:b", "unload:b", "load:c"]
    health = pool.health()
    assert {name: health[name].state for name in "abc"} == {"a": "ready", "b": "unloaded", "c": "ready"}
    assert health["c"].memory_mb == 100 and health["c"].loaded


async def test_an_engine_bigger_than_the_budget_loads_alone(
    make_pool: MakePool, caplog: pytest.LogCaptureFixture
) -> None:
    probe = Probe()
    engines = {
        "small": engine("EchoEngine", probe=probe, options={"name": "small"}, memory_mb=100),
        "big": engine("EchoEngine", probe=probe, options={"name": "big"}, memory_mb=300),
    }
    pool = await make_pool(engines, memory_budget_mb=150)
    await pool.run("small", 1)
    with caplog.at_level(logging.WARNING, logger="engines.budget"):
        assert await pool.run("big", 2) == 2
    assert "more than the whole memory budget" in caplog.text
    assert probe.events == ["load:small", "unload:small", "load:big"]


async def test_a_load_waits_for_a_busy_engine_instead_of_exceeding_the_budget(make_pool: MakePool) -> None:
    probe = Probe()
    engines = {
        "busy": engine("GatedEngine", probe=probe, options={"name": "busy"}, memory_mb=100),
        "next": engine("EchoEngine", probe=probe, options={"name": "next"}, memory_mb=100),
    }
    pool = await make_pool(engines, memory_budget_mb=150)
    running = pool.submit("busy", 1)
    await eventually(probe.started.is_set)
    waiting = pool.submit("next", 2)
    await asyncio.sleep(0.1)
    assert not waiting.done and probe.events == ["load:busy"]

    probe.release.set()
    assert (await running.result(), await waiting.result()) == (1, 2)
    assert probe.events == ["load:busy", "unload:busy", "load:next"]


# --- placement


async def test_engines_on_one_device_share_its_concurrency(make_pool: MakePool) -> None:
    first, second = Probe(), Probe()
    pool = await make_pool(
        {
            "one": engine("GatedEngine", probe=first, device="npu"),  # not listed: 1 at a time
            "two": engine("GatedEngine", probe=second, device="npu"),
        }
    )
    jobs = [pool.submit("one", 1), pool.submit("two", 2)]
    await eventually(lambda: first.started.is_set() or second.started.is_set())
    await asyncio.sleep(0.1)
    assert first.started.is_set() != second.started.is_set()
    first.release.set()
    second.release.set()
    assert [await job.result() for job in jobs] == [1, 2]
    assert first.max_active == second.max_active == 1
    assert first.started.is_set() and second.started.is_set()


async def test_coroutine_engines_run_on_the_event_loop(make_pool: MakePool) -> None:
    pool = await make_pool({"async": engine("AsyncEngine", max_batch=4)})
    assert await pool.run("async", "x") == ("x", threading.current_thread().name)


# --- streaming


async def test_streams_from_sync_and_async_generators(make_pool: MakePool) -> None:
    pool = await make_pool(
        {
            "words": engine("WordStreamEngine"),
            "async_words": engine("AsyncWordStreamEngine"),
            "echo": engine("EchoEngine"),
        }
    )
    assert [chunk async for chunk in pool.stream("words", "a b c")] == ["a", "b", "c"]
    assert [chunk async for chunk in pool.stream("async_words", "d e")] == ["d", "e"]
    assert [chunk async for chunk in pool.stream("echo", "whole")] == ["whole"]  # no stream(): one chunk

    got: list[str] = []
    with pytest.raises(EngineError, match="ValueError: stream broke"):
        async for chunk in pool.stream("words", "a boom c"):
            got.append(chunk)
    assert got == ["a"]

    async with pool.stream("words", "x y z") as chunks:  # leaving early cancels the job
        assert await anext(chunks) == "x"
    with pytest.raises(asyncio.CancelledError):
        await chunks.job.result()


# --- process workers


async def test_process_worker_progress_stream_errors_and_cancellation(
    make_pool: MakePool, tmp_path: Path
) -> None:
    pool = await make_pool({"proc": engine("ProcessEngine", worker="process")})
    pid = await pool.run("proc", "pid")
    assert pid != os.getpid()

    notes: list[tuple[float, str]] = []
    assert await pool.run("proc", "progress", progress=lambda f, note: notes.append((f, note))) == "done"
    assert [note for _, note in notes] == ["step 1", "step 2", "step 3"]
    assert [chunk async for chunk in pool.stream("proc", "x y z")] == ["x", "y", "z"]

    with pytest.raises(EngineError, match="ValueError: boom"):
        await pool.run("proc", "boom")

    marker = tmp_path / "cancelled"
    with pytest.raises(JobTimeout):
        await pool.run("proc", f"wait:{marker}", timeout=0.3)
    await eventually(marker.exists)
    assert marker.read_text() == "cancelled"  # cancelled() turned true in the child
    assert await pool.run("proc", "pid") == pid  # same child all along


async def test_killed_process_worker_fails_its_batch_and_the_next_job_gets_a_new_child(
    make_pool: MakePool,
) -> None:
    pool = await make_pool(
        {
            "proc": engine("ProcessEngine", worker="process", max_batch=4, batch_wait_ms=100),
            "slow": engine("EchoEngine", options={"delay_s": 0.5}),
        }
    )
    first_pid = await pool.run("proc", "pid")
    other_engine = asyncio.create_task(pool.run("slow", "fine"))
    await asyncio.sleep(0.05)
    batch = [pool.submit("proc", "pid"), pool.submit("proc", "die")]
    for job in batch:
        with pytest.raises(EngineUnavailable, match="died"):
            await job.result()
    assert await other_engine == "fine"
    health = pool.health()["proc"]
    assert health.state == "unloaded" and "exit code -9" in (health.last_error or "")

    second_pid = await pool.run("proc", "pid")
    assert second_pid not in (first_pid, os.getpid())

    stuck = pool.submit("proc", "wait:/dev/null")
    await eventually(lambda: stuck.position == 0)
    await pool.close(drain_timeout=0.2)  # cancels the job; the child sees it, finishes, and is stopped
    with pytest.raises(EngineUnavailable, match="shut down"):
        await stuck.result()
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("engine-")]


# --- shutdown


async def test_close_drains_in_flight_jobs(make_pool: MakePool) -> None:
    probe = Probe()
    pool = await make_pool({"gated": engine("GatedEngine", probe=probe)})
    running = pool.submit("gated", 1)
    await eventually(probe.started.is_set)
    queued = pool.submit("gated", 2)

    closing = asyncio.create_task(pool.close(drain_timeout=5))
    await asyncio.sleep(0.05)
    with pytest.raises(EngineUnavailable):
        pool.submit("gated", 3)
    assert not closing.done()

    probe.release.set()
    await closing
    assert (await running.result(), await queued.result()) == (1, 2)
    assert probe.events == ["load:echo", "unload:echo"]


async def test_close_cancels_what_outlives_the_drain_timeout(make_pool: MakePool) -> None:
    probe = Probe()
    pool = await make_pool({"gated": engine("GatedEngine", probe=probe)})
    running = pool.submit("gated", 1)
    await eventually(probe.started.is_set)
    queued = pool.submit("gated", 2)

    await pool.close(drain_timeout=0.1)
    for job in (running, queued):
        with pytest.raises(EngineUnavailable, match="shut down"):
            await job.result()
    await eventually(probe.cancel_seen.is_set)


async def test_metrics_follow_the_jobs(make_pool: MakePool) -> None:
    metrics = Metrics()
    pool = await make_pool({"echo": engine("EchoEngine")}, metrics=metrics)
    await pool.run("echo", 1)
    await pool.run("echo", 2)
    sample = metrics.registry.get_sample_value
    assert sample("bot_job_seconds_count", {"engine": "echo", "status": "ok"}) == 2
    assert sample("bot_job_queue_seconds_count", {"engine": "echo"}) == 2
    assert sample("bot_engine_loaded", {"engine": "echo"}) == 1
    assert sample("bot_engine_queue_depth", {"engine": "echo"}) == 0
    assert sample("bot_engine_running", {"engine": "echo"}) == 0


async def test_concurrency_lets_streams_of_one_engine_overlap(make_pool: MakePool) -> None:
    pool = await make_pool({
        "lanes": engine("RendezvousStreamEngine", concurrency=3, device="remote"),
        "single": engine("RendezvousStreamEngine"),
    })

    async def collect(name: str, payload: int) -> list[str]:
        return [chunk async for chunk in pool.stream(name, payload)]

    together = await asyncio.gather(*(collect("lanes", 3) for _ in range(3)))
    assert together == [["met"]] * 3
    # with the default concurrency of 1, the second stream starts only after the first ended
    apart = await asyncio.gather(*(collect("single", 2) for _ in range(2)))
    assert ["alone"] in apart
