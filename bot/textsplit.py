"""Split long replies at a platform's length limit without breaking code fences."""

from __future__ import annotations

FENCE = "```"


def _cut_point(text: str, limit: int) -> int:
    """Best index <= limit to cut at: paragraph, then line, then word, else hard."""
    window = text[:limit]
    for sep in ("\n\n", "\n", " "):
        idx = window.rfind(sep)
        if idx > limit // 3:
            return idx + len(sep)
    return limit


def split_message(text: str, limit: int) -> list[str]:
    """Split `text` into chunks of at most `limit` characters.

    Cuts prefer paragraph, then line, then word boundaries. A cut inside a ``` fence closes
    the fence at the end of the chunk and reopens it (with its language tag) in the next,
    so every chunk renders as valid markdown.
    """
    if limit < 16:
        raise ValueError("limit too small")
    chunks: list[str] = []
    rest = text
    reopen = ""  # fence opener carried into the next chunk
    while rest:
        body = reopen + rest
        if len(body) <= limit:
            chunks.append(body)
            break
        # Leave room for a closing fence.
        budget = limit - len(FENCE) - 1
        cut = _cut_point(body, budget)
        if cut <= len(reopen):
            cut = budget
        chunk = body[:cut]
        opener = _open_fence(chunk)
        if opener is not None:
            chunk = chunk.rstrip("\n") + "\n" + FENCE
            reopen = opener + "\n"
        else:
            reopen = ""
        chunks.append(chunk.rstrip() if opener is None else chunk)
        rest = body[cut:].lstrip("\n") if opener is None else body[cut:]
    return [c for c in chunks if c.strip()]


def _open_fence(chunk: str) -> str | None:
    """The opening fence line (e.g. ```python) if `chunk` ends inside a code block."""
    opener: str | None = None
    for line in chunk.split("\n"):
        stripped = line.strip()
        if stripped.startswith(FENCE):
            opener = None if opener is not None else stripped
    return opener
