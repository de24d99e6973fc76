"""/unittest on the real bundled chat model (qwen2.5-coder 0.5B in llama.cpp), through the web adapter.

A model this small does not always write tests that pass: the test requires a file that parses and holds test
functions, runs it with pytest beside the module and prints what it produced and how many tests passed.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.settings import EngineSettings
from handlers import unittest_cmd
from tests.conftest import AppFactory
from tests.integration.test_unittest_cmd import CALC, run_pytest
from tests.support.web_client import Visitor

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


async def test_unittest_with_the_local_model(app_factory: AppFactory, tmp_path: Path) -> None:
    # Short answers, and one llama.cpp thread (two stall badly when other work shares the 2 cores), keep the
    # chain (3 to 5 calls) to 15-30 s on the CI machine.
    # A 0.5B model sometimes needs more tries than the default 2 corrections to write a file that parses.
    llm = EngineSettings(impl="engines.llm:ChatEngine", device="remote", timeout_s=180,
                         options={"provider": "local", "cache_dir": str(ROOT / ".data" / "models"), "ctx_size": 8192,
                                  "threads": 1})
    app = await app_factory(real=("llm",), engines={"llm": llm},
                            unittest={"explain_tokens": 160, "plan_tokens": 200, "write_tokens": 450, "max_retries": 4})
    started = time.monotonic()
    async with Visitor(app.url) as v:
        status, body = await v.upload("calc.py", CALC.encode())
        assert status == 200, body
        mid = await v.send("/unittest", attachments=[str(body["id"])])

        def done(frame: dict[str, Any]) -> bool:
            if frame.get("reply_to") == mid and frame.get("type") == "error":
                raise AssertionError(frame["text"])
            return frame.get("reply_to") == mid and frame.get("type") == "file"

        frame = await v.wait_for(done, timeout=240)
        async with aiohttp.ClientSession() as http, http.get(app.url + frame["url"]) as resp:
            assert resp.status == 200
            code = (await resp.read()).decode()
        card = next(f["text"] for f in v.replies(mid) if f["type"] == "message" and "Tests for calc.py" in f["text"])
    took = time.monotonic() - started
    assert frame["name"] == "test_calc.py"
    check = unittest_cmd.check_tests(code, "calc")
    assert check.problem is None and check.tests > 0

    work = tmp_path / "module"
    work.mkdir()
    (work / "calc.py").write_text(CALC, encoding="utf-8")
    (work / "test_calc.py").write_text(code, encoding="utf-8")
    run = await asyncio.to_thread(run_pytest, work)
    passed = re.search(r"(\d+) passed", run.stdout)
    print(f"\n--- card ---\n{card}\n--- caption ---\n{frame['caption']}\n--- test_calc.py ---\n{code}"
          f"--- pytest (exit {run.returncode}) ---\n{run.stdout[-3000:]}{run.stderr[-1000:]}\n"
          f"{passed.group(1) if passed else 0} of {check.tests} test function(s) passed; chain took {took:.1f} s")
