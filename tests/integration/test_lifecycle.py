"""The service as an operator runs it: embedded database, restarts, SIGTERM, doctor, bad config."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from bot.app import start
from bot.settings import Settings
from tests.support.web_client import Visitor

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_root() -> Iterator[Path]:
    """A data directory outside pytest's basetemp: pgserver opens its parents to its own user, and a
    concurrent pytest run tightens pytest's base directory again (0700) under it."""
    root = Path(tempfile.mkdtemp(prefix="teambot-restart-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def test_restart_keeps_data_in_the_embedded_database(
    data_root: Path, make_settings: Callable[..., Settings]
) -> None:
    tmp_path = data_root
    settings = make_settings(tmp_path / "data", server={"port": 0})
    visitor = "returning-visitor"
    running = await start(settings)
    try:
        async with Visitor(running.url, visitor=visitor) as v:
            status, body = await v.upload("keep.txt", b"keep me")
            assert status == 200
            mid = await v.send("", attachments=[body["id"]])
            await v.reply(mid, contains="keep.txt")
            assert any("Hi" in f.get("text", "") for f in v.replies(mid))  # greeted on first contact
    finally:
        await running.stop()

    running = await start(make_settings(tmp_path / "data", server={"port": 0}))
    try:
        assert running.services.store.embedded
        async with Visitor(running.url, visitor=visitor) as v:
            mid = await v.send("/ping")
            await v.reply(mid, contains="Pong")
            assert not any("Hi" in f.get("text", "") for f in v.replies(mid))  # remembered: no greeting
            mid = await v.send("", attachments=[body["id"]])  # the upload survived too
            await v.reply(mid, contains="keep.txt")
    finally:
        await running.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bot_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_") and k != "DATABASE_URL"}
    env.update({"BOT_DATA_DIR": str(tmp_path / "data"), "BOT_CONFIG": str(tmp_path / "bot.toml"), **extra})
    (tmp_path / "bot.toml").touch()
    return env


async def test_serve_answers_health_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = bot_env(tmp_path, BOT_SERVER__PORT=str(port), BOT_LOG_FORMAT="json", OPENAI_API_KEY="sk-secret-value-1")
    log_path = tmp_path / "serve.log"
    log_file = log_path.open("wb")  # a file, not a pipe: a full pipe would block the server
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once; the test then polls it over HTTP
        [sys.executable, "-m", "bot", "serve"], cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
    )
    try:
        health = None
        async with aiohttp.ClientSession() as http:
            for _ in range(150):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        health = await resp.json()
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.2)
        assert health is not None and health["database"]["status"] == "up"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log_file.close()
    out = log_path.read_bytes()
    assert proc.returncode == 0
    lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert any("draining" in line["message"] for line in lines)
    assert "sk-secret-value-1" not in out.decode()


def test_bad_config_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    env = bot_env(tmp_path)
    (tmp_path / "bot.toml").write_text("[server]\nprot = 1\n")
    done = subprocess.run([sys.executable, "-m", "bot", "serve"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "server.prot" in done.stderr


def test_doctor_reports_configuration(tmp_path: Path) -> None:
    env = bot_env(tmp_path)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "bot", "doctor"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "database reachable" in done.stdout
    assert "SLACK_BOT_TOKEN" in done.stdout and "fix:" in done.stdout
    assert time.monotonic() - started < 60
