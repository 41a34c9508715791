"""A watchdog that says when, and where, the worker's event loop stops turning.

Every async activity of a worker shares one event loop, and its heartbeats are sent from it: a
blocking call on the loop (a synchronous DB write behind a lock, a slow fsync) silences every
heartbeat in the process, and Temporal fails the activities on "Heartbeat timeout" with nothing in
the log to say why. A thread that the loop cannot hold up watches a tick the loop writes; past
``threshold`` seconds without it, it logs the loop thread's stack once, then how long the stall
lasted, and counts it in ``sterna_worker_loop_stalls_total``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback

from prometheus_client import Counter

from activities.metrics import REGISTRY

log = logging.getLogger("sterna.worker.loop")

STALLS = Counter("sterna_worker_loop_stalls", "Times the worker's event loop was blocked past the stall threshold",
                 registry=REGISTRY)


class LoopWatch:
    """Start with :meth:`start` from the loop's own thread; :meth:`stop` ends the watch."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        # A tick several times per threshold, so a stall is seen within about a quarter of it.
        self.period = threshold / 4
        self._tick = time.monotonic()
        self._stopped = threading.Event()
        self._loop_thread = threading.get_ident()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop_thread = threading.get_ident()
        self._task = asyncio.get_running_loop().create_task(self._ticks())
        threading.Thread(target=self._watch, name="sterna-loop-watch", daemon=True).start()

    async def stop(self) -> None:
        self._stopped.set()
        if self._task is not None:
            self._task.cancel()

    async def _ticks(self) -> None:
        while True:
            self._tick = time.monotonic()
            await asyncio.sleep(self.period)

    def _watch(self) -> None:
        stalled_since: float | None = None
        asleep, cpu = time.monotonic(), time.process_time()
        while not self._stopped.wait(self.period):
            now, used = time.monotonic(), time.process_time()
            (overslept, asleep), (spent, cpu) = (now - asleep - self.period, now), (used - cpu, used)
            late = now - self._tick - self.period
            if overslept > self.threshold:
                # This thread stood still too: the whole process was stopped (SIGSTOP, a paused VM), got
                # no CPU, or one of its threads held the GIL in a C call: the CPU the process used
                # meanwhile tells which. Not the loop's doing, and its stack would only show it waiting.
                log.warning("worker process did not run Python for %.1f s (stopped, starved of CPU, or the GIL "
                            "held); it used %.1f CPU-s meanwhile", overslept, spent)
                self._tick = now
                continue
            if late > self.threshold and stalled_since is None:
                stalled_since = self._tick
                STALLS.inc()
                frame = sys._current_frames().get(self._loop_thread)
                stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no frame)"
                log.warning("event loop blocked for %.1f s so far (heartbeats stop meanwhile); it is in:\n%s",
                            late, stack)
            elif late <= self.threshold and stalled_since is not None:
                log.warning("event loop turned again after %.1f s", self._tick - stalled_since)
                stalled_since = None
