"""Token estimates for providers that offer no tokenizer."""

from __future__ import annotations

import re

CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def estimate_tokens(text: str) -> int:
    """About 4 characters a token, and one per CJK character."""
    cjk = len(CJK.findall(text))
    return cjk + max(1, (len(text) - cjk) // 4)
