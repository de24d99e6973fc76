"""Adapters translate, handlers decide, engines compute: the imports must say so."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLATFORM_LIBS = {"slack_bolt", "slack_sdk", "discord"}
WEB_LIBS = {"aiohttp"}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def python_files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in (ROOT / folder).rglob("*.py")]


def test_only_adapters_import_platform_libraries() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in python_files("bot", "handlers", "engines", "storage")
        if "adapters" not in p.parts and imported_roots(p) & PLATFORM_LIBS
    ]
    assert offenders == []


def test_handlers_know_no_transport_and_engines_no_chat_platform() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in python_files("handlers")
        if imported_roots(p) & (PLATFORM_LIBS | WEB_LIBS) or "bot.adapters" in p.read_text(encoding="utf-8")
    ]
    # Engines may call HTTP APIs (aiohttp as a client), but never a chat platform or an adapter.
    offenders += [
        str(p.relative_to(ROOT))
        for p in python_files("engines")
        if imported_roots(p) & PLATFORM_LIBS or "bot.adapters" in p.read_text(encoding="utf-8")
    ]
    assert offenders == []
