"""The pool's memory budget: lazy loads, and LRU unloading of idle engines to make room."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Protocol

log = logging.getLogger(__name__)


class Budgeted(Protocol):
    """An engine slot as the budget sees it."""

    name: str
    memory_mb: int

    def is_ready(self) -> bool: ...

    async def prepare(self) -> int: ...

    async def load(self) -> None: ...

    async def unload(self) -> None: ...


class MemoryBudget:
    """Keeps the sum of loaded engines' `memory_mb` within `budget_mb`.

    An engine is loaded on first use (`acquire`) and marked busy until `release`. To make room,
    idle engines are unloaded least recently used first; busy ones are waited for. While a load
    waits for room, loaded engines wait before starting new work, so the load cannot starve. An
    engine bigger than the whole budget loads alone, with a warning.
    """

    def __init__(self, budget_mb: int) -> None:
        self.budget_mb = budget_mb
        self._cond = asyncio.Condition()
        self._loaded: OrderedDict[str, tuple[Budgeted, int]] = OrderedDict()  # least recently used first
        self._busy: set[str] = set()
        self._waiting_loads = 0

    @property
    def used_mb(self) -> int:
        return sum(mb for _, mb in self._loaded.values())

    def loaded(self) -> list[str]:
        return list(self._loaded)

    async def acquire(self, slot: Budgeted) -> None:
        """Mark `slot` busy, loading it first if needed. Raises whatever its prepare or load raises."""
        async with self._cond:
            if slot.name in self._loaded and slot.name not in self._busy and not slot.is_ready():
                del self._loaded[slot.name]  # its worker died while idle: that memory is free
            while slot.name in self._loaded and self._waiting_loads:
                await self._cond.wait()
            if slot.name in self._loaded:
                self._busy.add(slot.name)
                self._loaded.move_to_end(slot.name)
                return
        needed = await slot.prepare()  # outside the lock: it may import a module or spawn a process
        async with self._cond:
            await self._make_room(slot, needed)
            self._loaded[slot.name] = (slot, needed)
            self._busy.add(slot.name)
            self._cond.notify_all()  # engines that held back for this load may go on
        try:
            await slot.load()
        except BaseException:
            await self.forget(slot)
            raise
        async with self._cond:
            if slot.name in self._loaded:
                self._loaded[slot.name] = (slot, slot.memory_mb)

    async def release(self, slot: Budgeted) -> None:
        """`slot` finished its work: it is idle and now the most recently used."""
        async with self._cond:
            self._busy.discard(slot.name)
            if slot.name in self._loaded:
                self._loaded.move_to_end(slot.name)
            self._cond.notify_all()

    async def forget(self, slot: Budgeted) -> None:
        """`slot` is no longer loaded (its load failed or its worker died)."""
        async with self._cond:
            self._loaded.pop(slot.name, None)
            self._busy.discard(slot.name)
            self._cond.notify_all()

    async def unload_all(self) -> None:
        async with self._cond:
            while self._loaded:
                _, (slot, _) = self._loaded.popitem(last=False)
                await self._unload(slot)
            self._busy.clear()
            self._cond.notify_all()

    async def _make_room(self, slot: Budgeted, needed: int) -> None:
        while self.used_mb + needed > self.budget_mb:
            idle = [other for name, (other, _) in self._loaded.items() if name not in self._busy]
            if idle:
                victim = idle[0]
                log.info(
                    "unloading engine %s (%d MB, least recently used) to make room for %s (%d MB)",
                    victim.name, victim.memory_mb, slot.name, needed,
                )
                del self._loaded[victim.name]
                await self._unload(victim)
                continue
            if not self._loaded:
                log.warning(
                    "engine %s needs %d MB, more than the whole memory budget of %d MB; loading it alone",
                    slot.name, needed, self.budget_mb,
                )
                return
            self._waiting_loads += 1
            try:
                await self._cond.wait()
            finally:
                self._waiting_loads -= 1

    @staticmethod
    async def _unload(slot: Budgeted) -> None:
        try:
            await slot.unload()
        except Exception:
            log.exception("engine %s failed to unload", slot.name)
