"""Per-conversation locks: a conversation's turns, and commands that change its memory, run in order."""

from __future__ import annotations

import asyncio
from collections import OrderedDict


class ConversationLocks:
    """One lock per conversation so its turns stay in order; bounded, least recently used dropped."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._locks: OrderedDict[int, asyncio.Lock] = OrderedDict()

    def get(self, conversation_id: int) -> asyncio.Lock:
        lock = self._locks.pop(conversation_id, None) or asyncio.Lock()
        self._locks[conversation_id] = lock
        while len(self._locks) > self.size:
            oldest, old = next(iter(self._locks.items()))
            if old.locked():
                break
            del self._locks[oldest]
        return lock
