"""The responder base: split sends, throttled stream edits, throttled progress."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bot.responder import BaseResponder, Button


class RecordingResponder(BaseResponder):
    """Records the primitives an adapter would turn into platform calls."""

    limit = 100

    def __init__(self, stream_interval_s: float = 0.2, progress_interval_s: float = 0.2) -> None:
        super().__init__(stream_interval_s, progress_interval_s)
        self.calls: list[tuple[str, str, str]] = []
        self.texts: dict[str, str] = {}

    async def _post(self, text: str, buttons: Sequence[Button]) -> str:
        mid = f"m{len(self.texts)}"
        self.texts[mid] = text
        self.calls.append(("post", mid, text))
        return mid

    async def _edit(self, message_id: str, text: str, buttons: Sequence[Button]) -> None:
        self.texts[message_id] = text
        self.calls.append(("edit", message_id, text))


async def test_send_splits_and_puts_buttons_on_last_part() -> None:
    r = RecordingResponder()
    ids = await r.send("para one " * 10 + "\n\n" + "para two " * 10, buttons=[Button("Again", "regen")])
    assert len(ids) == 2
    assert all(len(t) <= 100 for t in r.texts.values())


async def test_stream_edits_one_message_at_most_once_per_interval() -> None:
    r = RecordingResponder(stream_interval_s=0.2)
    async with r.stream() as w:
        for _ in range(20):
            await w.write("ab ")
            await asyncio.sleep(0.02)  # 20 writes over ~0.4 s
    posts = [c for c in r.calls if c[0] == "post"]
    edits = [c for c in r.calls if c[0] == "edit"]
    assert len(posts) == 1
    assert 1 <= len(edits) <= 4  # ~0.4 s / 0.2 s, plus the final edit
    assert r.texts[posts[0][1]].rstrip() == ("ab " * 20).rstrip()


async def test_stream_overflow_continues_in_new_message() -> None:
    r = RecordingResponder(stream_interval_s=0)
    async with r.stream() as w:
        for i in range(30):
            await w.write(f"word{i:02d} ")
    posts = [c for c in r.calls if c[0] == "post"]
    assert len(posts) >= 3
    combined = " ".join(r.texts[p[1]] for p in posts)
    assert combined.split() == [f"word{i:02d}" for i in range(30)]


async def test_progress_is_throttled_but_final_always_shows() -> None:
    r = RecordingResponder(progress_interval_s=10)
    for i in range(10):
        await r.progress(i / 10, f"step {i}")
    await r.progress(1.0, "done")
    assert len(r.calls) == 2  # first post, final edit
    assert r.calls[0][0] == "post" and r.calls[1][0] == "edit"
    assert "100%" in r.calls[1][2]


async def test_channel_pacer_spaces_posts_per_channel() -> None:
    import time

    from bot.adapters.slack_responder import ChannelPacer

    pacer = ChannelPacer(0.1)
    started = time.monotonic()
    for _ in range(3):
        await pacer.wait("C1")
    assert time.monotonic() - started >= 0.2  # three posts, two gaps
    other = time.monotonic()
    await pacer.wait("C2")  # another channel does not wait
    assert time.monotonic() - other < 0.05
