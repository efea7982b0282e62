"""Per-client token buckets for ``streamrec serve`` (``STREAMREC_SERVE_RATE_LIMIT`` / ``_BURST``).

Each client (an API key, or a remote address when no key is configured) has a bucket of ``burst``
tokens refilled at ``rate`` per second; a request takes one, and a request that finds none is
answered ``429`` with the seconds until the next token (``Retry-After``). A bucket left alone for
``burst / rate`` seconds is full again, the same as a new one, so it is dropped: memory holds only
the clients seen in the last few seconds, and never more than ``max_clients`` buckets (past that the
longest-unused bucket is dropped even if it is not full, which only errs in that client's favour).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """``rate`` requests per second per client, in bursts of up to ``burst``; ``clock`` is for tests.

    >>> now = [0.0]
    >>> limiter = RateLimiter(rate=2.0, burst=2, clock=lambda: now[0])
    >>> [limiter.wait("a"), limiter.wait("a"), limiter.wait("a"), limiter.wait("b")]
    [0.0, 0.0, 0.5, 0.0]
    >>> now[0] = 0.5
    >>> limiter.wait("a")
    0.0
    """

    def __init__(
        self, rate: float, burst: int, *, max_clients: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1 or max_clients < 1:
            raise ValueError("rate must be > 0, burst and max_clients >= 1")
        self.rate, self.burst, self.max_clients, self.clock = rate, float(burst), max_clients, clock
        self.refill_s = burst / rate  # an untouched bucket is full again after this long
        # client -> (tokens left, when they were counted); least recently used first
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def wait(self, client: str) -> float:
        """Take a token for ``client``: ``0.0`` if the request may go on, else the seconds until it may."""
        now = self.clock()
        self._evict(now)
        tokens, since = self.buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - since) * self.rate)
        if tokens >= 1.0:
            self.buckets[client] = (tokens - 1.0, now)
            return 0.0
        self.buckets[client] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _evict(self, now: float) -> None:
        buckets = self.buckets
        while buckets:
            oldest, (_, since) = next(iter(buckets.items()))
            if now - since < self.refill_s and len(buckets) < self.max_clients:
                return
            del buckets[oldest]
