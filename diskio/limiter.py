"""A bandwidth cap shared by the lanes of one transfer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Paces callers to ``rate`` bytes per second on average.

    Each ``acquire(n)`` books the next ``n / rate`` seconds of a shared timeline and sleeps
    until its slot starts, so concurrent lanes share the rate instead of each getting it.
    Up to ``burst`` seconds of unused time may be spent at once (a lane that was idle does
    not have to wait for the first chunk after it).
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = clock()

    def acquire(self, nbytes: int) -> float:
        """Block until ``nbytes`` may move; returns the seconds slept."""
        with self._lock:
            now = self._clock()
            start = max(self._next, now - self.burst)
            self._next = start + nbytes / self.rate
            wait = start - now
        if wait > 0:
            self._sleep(wait)
            return wait
        return 0.0
