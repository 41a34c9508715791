"""``poll_until``: the one wait-for-a-remote-state loop of the providers and the disk engine."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll_until(deadline: float, interval: float, what: Callable[[], T | None], *,
               backoff: float = 1.0, max_interval: float | None = None) -> T | None:
    """Call ``what()`` until it returns something other than ``None``, and return that.

    ``deadline`` is a ``time.monotonic()`` value: once it has passed, ``what`` is still called
    once more, then ``None`` is returned and the caller raises the error that names what it
    waited for. ``what`` raises to stop early (a failed state). Between calls the loop sleeps
    ``interval`` seconds, multiplied by ``backoff`` after each sleep up to ``max_interval``.
    Blocking: call it from a thread, never from the event loop.
    """
    delay = interval
    while True:
        result = what()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            return None
        time.sleep(delay)
        delay = delay * backoff if max_interval is None else min(delay * backoff, max_interval)
