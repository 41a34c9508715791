"""A bandwidth cap shared by the lanes of one transfer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from core.errors import TransferError


class Stopped(TransferError):
    """The transfer was told to stop (cancelled, or its attempt ended) while this lane waited or worked."""


class RateLimiter:
    """Paces callers to ``rate`` bytes per second on average.

    Each ``acquire(n)`` books the next ``n / rate`` seconds of a shared timeline and sleeps
    until its slot starts, so concurrent lanes share the rate instead of each getting it.
    Up to ``burst`` seconds of unused time may be spent at once: a lane that was idle does
    not have to wait for the first chunk after it, and time lost to a stall (the disk, the
    host, a slow source) is made up afterwards, so the average stays at the rate. The
    timeline starts when the limiter is made, so a copy never starts ahead of it.
    """

    #: half a second: stalls of a few hundred milliseconds happen on a busy or virtual host
    #: (a 1 GiB ``dd`` into the page cache took 0.21 s and 0.64-2.9 s at other times, on the
    #: bench machine of 2026-12-07), and with the 50 ms burst before, the 50 MiB/s cap of
    #: ``make bench`` came out at 48.4-48.8 MiB/s in the runs that met one; the price is up to
    #: half a second's bytes moving at full speed after a stall or an idle spell
    DEFAULT_BURST = 0.5

    def __init__(
        self,
        rate: float,
        *,
        burst: float = DEFAULT_BURST,
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

    def acquire(self, nbytes: int, stop: threading.Event | None = None) -> float:
        """Block until ``nbytes`` may move; returns the seconds slept.

        With ``stop``, the wait ends as soon as it is set, with ``Stopped``: a cancelled transfer
        does not sleep out the time its lanes had booked.
        """
        with self._lock:
            now = self._clock()
            start = max(self._next, now - self.burst)
            self._next = start + nbytes / self.rate
            wait = start - now
        if stop is not None and stop.is_set():
            raise Stopped("the transfer was stopped")
        if wait <= 0:
            return 0.0
        if stop is None:
            self._sleep(wait)
        elif stop.wait(wait):
            raise Stopped("the transfer was stopped while waiting for its bandwidth share")
        return wait

