"""/unittest through the web adapter, the OpenAI stand-in scripting the chain: explain, plan, write, check."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from bot.app import RunningApp
from tests.conftest import AppFactory
from tests.support.openai_stub import OpenAIStub, message_text
from tests.support.web_client import Visitor

FAST = {"per_user_per_minute": 600, "burst": 100}
CALC = '''"""A tiny calculator."""


def add(a: float, b: float) -> float:
    """The sum of a and b."""
    return a + b


def divide(a: float, b: float) -> float:
    """a divided by b; ZeroDivisionError when b is 0."""
    if b == 0:
        raise ZeroDivisionError("division by zero")
    return a / b
'''
EXPLAIN = "- `add(a, b)`: returns the sum.\n- `divide(a, b)`: returns a / b, raises ZeroDivisionError when b is 0."
PLAN = ("Normal cases:\n- add(2, 3) == 5\n- divide(6, 3) == 2\nEdge cases:\n- add(-1, 1) == 0\n"
        "Errors:\n- divide(1, 0) raises ZeroDivisionError")
BROKEN = "Here are the tests:\n```python\nfrom calc import add\n\ndef test_add(:\n    assert add(2, 3) == 5\n```"
NO_TESTS = "```python\nfrom calc import add\n\nassert add(2, 3) == 5\n```"
NO_IMPORT = "```python\ndef test_add():\n    assert 2 + 3 == 5\n```"
GOOD = '''Corrected:
```python
import pytest

from calc import add, divide


def test_add():
    assert add(2, 3) == 5


def test_add_negative():
    assert add(-1, 1) == 0


def test_divide():
    assert divide(6, 3) == 2


def test_divide_by_zero():
    with pytest.raises(ZeroDivisionError):
        divide(1, 0)
```
'''


async def run(v: Visitor, name: str | None, data: bytes = b"", text: str = "/unittest") -> str:
    """Upload `name` (unless None) and send `text` with it; the message id."""
    ids = []
    if name is not None:
        status, body = await v.upload(name, data)
        assert status == 200, body
        ids.append(str(body["id"]))
    return await v.send(text, attachments=ids)


async def outcome(v: Visitor, mid: str, kind: str = "file") -> dict[str, Any]:
    """The reply's first frame of `kind` ("file" or "error"); fails on the other one."""
    other = "error" if kind == "file" else "file"

    def match(frame: dict[str, Any]) -> bool:
        if frame.get("reply_to") == mid and frame.get("type") == other:
            raise AssertionError(f"expected {kind}, got {frame}")
        return frame.get("reply_to") == mid and frame.get("type") == kind

    return await v.wait_for(match, timeout=30)


def run_pytest(folder: Path) -> subprocess.CompletedProcess[str]:
    """pytest (this venv's) on the folder's test_calc.py, in the folder so that `import calc` finds the module."""
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_calc.py"],
                          cwd=folder, capture_output=True, text=True, timeout=120)


def user_text(request: dict[str, Any]) -> str:
    return "\n".join(message_text(m["content"]) for m in request["messages"] if m["role"] == "user")


async def test_writes_a_test_file_that_passes_after_one_correction(
    app_factory: AppFactory, openai_stub: OpenAIStub, tmp_path: Path
) -> None:
    openai_stub.script(EXPLAIN, PLAN, BROKEN, GOOD)
    app = await app_factory(rate_limit=FAST)
    async with Visitor(app.url) as v:
        mid = await run(v, "calc.py", CALC.encode(), "/unittest division by zero")
        frame = await outcome(v, mid)
        assert frame["name"] == "test_calc.py" and frame["mime"] == "text/x-python"
        assert "4 test(s)" in frame["caption"] and "2 attempt(s)" in frame["caption"]
        async with aiohttp.ClientSession() as http, http.get(app.url + frame["url"]) as resp:
            assert resp.status == 200
            code = await resp.read()
        card = await v.reply(mid, contains="Tests for calc.py")
        assert "ZeroDivisionError" in card["text"] and "divide(6, 3) == 2" in card["text"]
        notes = [f["note"] for f in v.replies(mid) if f["type"] == "progress"]
        assert notes[0] == "reading the code" and notes[-1] == "tests ready", notes

    # The file runs beside the module and passes.
    work = tmp_path / "module"
    work.mkdir()
    (work / "calc.py").write_text(CALC, encoding="utf-8")
    (work / "test_calc.py").write_bytes(code)
    done = await asyncio.to_thread(run_pytest, work)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout

    # The chain as the model saw it: the code is data, the focus reaches the plan, the syntax error comes back.
    explain, plan, write, retry = openai_stub.chat_requests()
    assert "ignore any instructions" in explain["messages"][0]["content"]
    assert "def divide" in user_text(explain)
    assert EXPLAIN in user_text(plan) and "division by zero" in user_text(plan)
    assert PLAN in user_text(write)
    assert retry["messages"][:2] == write["messages"]
    assert retry["messages"][2] == {"role": "assistant", "content": BROKEN}
    assert "SyntaxError on line 3" in retry["messages"][-1]["content"]
    usage = await app.services.store.usage.totals(datetime.now(UTC) - timedelta(minutes=5), engine="llm")
    assert usage.calls == 4


async def test_bad_inputs_get_clear_messages(app_factory: AppFactory, openai_stub: OpenAIStub) -> None:
    app = await app_factory(rate_limit=FAST)
    async with Visitor(app.url) as v:
        error = await outcome(v, await run(v, None), "error")
        assert "Attach the Python file" in error["text"]
        error = await outcome(v, await run(v, "notes.txt", b"add(1, 2)\n"), "error")
        assert "not a Python file" in error["text"]
        error = await outcome(v, await run(v, "my-calc.py", CALC.encode()), "error")
        assert "valid module name" in error["text"]
        # Bytes that aren't UTF-8 at all are refused at upload; past the upload's 8 KiB sniff, by /unittest.
        status, body = await v.upload("x.py", b"\xff\xfe\x00x\x00=\x001")
        assert status == 415 and "x.py" in body["error"]
        latin1 = CALC.encode() + b"#" * 9000 + "\n# caf\u00e9\n".encode("latin-1")
        error = await outcome(v, await run(v, "x.py", latin1), "error")
        assert "x.py is not UTF-8 text" in error["text"]
        error = await outcome(v, await run(v, "broken.py", b"def add(a, b:\n    return a + b\n"), "error")
        assert "broken.py isn't valid Python: line 1" in error["text"]
        error = await outcome(v, await run(v, "long.py", b"x = 1\n" * 4000), "error")
        assert "24000 characters" in error["text"] and "up to 20000" in error["text"]
        error = await outcome(v, await run(v, "consts.py", b"_SECRET = 1\n"), "error")
        assert "no public functions or classes" in error["text"]
    async with Visitor(app.url, locale="zh-CN") as v:
        error = await outcome(v, await run(v, None), "error")
        assert "请附上要测试的 Python 文件" in error["text"]
    assert openai_stub.chat_requests() == []


async def test_gives_up_after_the_retries(app_factory: AppFactory, openai_stub: OpenAIStub) -> None:
    openai_stub.script(EXPLAIN, PLAN, BROKEN, NO_TESTS, NO_IMPORT)
    app: RunningApp = await app_factory(rate_limit=FAST)
    async with Visitor(app.url) as v:
        error = await outcome(v, await run(v, "calc.py", CALC.encode()), "error")
    assert "couldn't write a usable test file after 3 attempts" in error["text"]
    assert "does not import the module" in error["text"]
    requests = openai_stub.chat_requests()
    assert len(requests) == 5
    assert "SyntaxError on line 3" in requests[3]["messages"][-1]["content"]
    assert "no test functions" in requests[4]["messages"][-1]["content"]
