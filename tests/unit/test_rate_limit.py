"""The per-user token bucket."""

from __future__ import annotations

from bot.middleware import RateLimit
from bot.settings import RateLimitSettings


def test_bucket_allows_burst_then_asks_to_wait_then_refills() -> None:
    now = [1000.0]
    limiter = RateLimit(RateLimitSettings(per_user_per_minute=60, burst=3), clock=lambda: now[0])
    assert [limiter.take("u") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("u")
    assert 0.9 <= wait <= 1.0
    assert limiter.take("other") == 0.0  # users are independent
    now[0] += 1.0
    assert limiter.take("u") == 0.0
