"""RateLimiter on an injected clock: burst, refill, Retry-After seconds, one bucket per client, bounded memory."""

from __future__ import annotations

import pytest

from streams.tools.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_passes_then_one_request_per_refill_interval():
    clock = Clock()
    limiter = RateLimiter(rate=4.0, burst=3, clock=clock)
    assert [limiter.wait("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait("a") == 0.25  # empty: the next token in 1/rate s
    clock.now += 0.125
    assert limiter.wait("a") == 0.125  # half a token so far; a refused request takes nothing
    clock.now += 0.125
    assert limiter.wait("a") == 0.0
    assert limiter.wait("a") == 0.25


def test_tokens_refill_up_to_the_burst_only():
    clock = Clock()
    limiter = RateLimiter(rate=100.0, burst=5, clock=clock)
    for _ in range(5):
        limiter.wait("a")
    clock.now += 3600
    assert [limiter.wait("a") for _ in range(6)].count(0.0) == 5


def test_clients_have_their_own_buckets():
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock)
    assert limiter.wait("key:a") == 0.0 and limiter.wait("key:a") > 0
    assert limiter.wait("key:b") == 0.0 and limiter.wait("address:127.0.0.1") == 0.0


def test_idle_buckets_are_dropped():
    clock = Clock()
    limiter = RateLimiter(rate=10.0, burst=5, clock=clock)  # a bucket is full again after 0.5 s
    for k in range(1000):
        limiter.wait(f"c{k}")
    assert len(limiter.buckets) == 1000
    clock.now += 0.5
    limiter.wait("late")
    assert list(limiter.buckets) == ["late"]


def test_at_most_max_clients_buckets_are_kept_the_longest_unused_dropped_first():
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=1, max_clients=3, clock=clock)
    for client in ("a", "b", "c"):
        limiter.wait(client)
        clock.now += 0.01
    limiter.wait("a")  # a is now the most recently used
    limiter.wait("d")
    assert list(limiter.buckets) == ["c", "a", "d"]


@pytest.mark.parametrize("rate, burst", [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_a_limit_that_cannot_work_is_refused(rate, burst):
    with pytest.raises(ValueError):
        RateLimiter(rate=rate, burst=burst)
