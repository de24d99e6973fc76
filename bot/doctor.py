"""`python -m bot doctor`: what is configured, what is missing, and how to fix it."""

from __future__ import annotations

import importlib
import shutil
from dataclasses import dataclass

from bot.settings import Settings


@dataclass(frozen=True)
class Check:
    ok: bool
    what: str
    fix: str = ""
    required: bool = True


def _importable(impl: str) -> str | None:
    module, _, cls = impl.partition(":")
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # report any import failure, never crash the doctor
        return f"{type(e).__name__}: {e}"
    return None if hasattr(mod, cls) else f"{module} has no {cls}"


async def gather_checks(settings: Settings) -> list[Check]:
    checks: list[Check] = []
    secrets = settings.secrets
    if secrets.database_url is None:
        checks.append(Check(True, f"database: embedded PostgreSQL in {settings.data_dir / 'postgres'}"))
    else:
        checks.append(Check(True, "database: DATABASE_URL is set (external PostgreSQL with pgvector)"))
    try:
        from storage.db import Store

        store = await Store.open(settings)
        try:
            latency = await store.ping()
            checks.append(Check(True, f"database reachable and migrated ({latency * 1000:.1f} ms)"))
        finally:
            await store.close()
    except Exception as e:  # a doctor reports, it does not raise
        checks.append(Check(False, f"database unreachable: {type(e).__name__}",
                            "check DATABASE_URL, or unset it to use the embedded PostgreSQL"))
    for name, engine in sorted(settings.engines.items()):
        problem = _importable(engine.impl)
        checks.append(Check(problem is None, f"engine {name}: {engine.impl} on {engine.device} ({engine.worker})",
                            f"install what {engine.impl} needs: {problem}" if problem else ""))
    checks.append(Check(secrets.openai_api_key is not None, "OpenAI API key (OPENAI_API_KEY)",
                        "optional: export OPENAI_API_KEY=... to use OpenAI models", required=False))
    slack = secrets.slack_bot_token is not None
    checks.append(Check(slack, "Slack bot token (SLACK_BOT_TOKEN)",
                        "optional: export SLACK_BOT_TOKEN and SLACK_APP_TOKEN (Socket Mode) or "
                        "SLACK_SIGNING_SECRET (HTTP mode); see README 'Slack'", required=False))
    checks.append(Check(secrets.discord_bot_token is not None, "Discord bot token (DISCORD_BOT_TOKEN)",
                        "optional: export DISCORD_BOT_TOKEN; see README 'Discord'", required=False))
    checks.append(Check(shutil.which("ffmpeg") is not None, "ffmpeg on PATH (audio and video)",
                        "apt-get install ffmpeg", required=False))
    checks.append(Check(True, f"web chat on http://{settings.server.host}:{settings.server.port}"))
    return checks


async def doctor(settings: Settings) -> int:
    checks = await gather_checks(settings)
    for check in checks:
        mark = "ok " if check.ok else ("FAIL" if check.required else "--  ")
        print(f"[{mark}] {check.what}")
        if not check.ok and check.fix:
            print(f"        fix: {check.fix}")
    failed = [c for c in checks if c.required and not c.ok]
    print("all required checks pass" if not failed else f"{len(failed)} required check(s) failed")
    return 1 if failed else 0
