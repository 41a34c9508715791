"""``in_thread``: a cancel never leaves a call running behind the caller's back.

A deployment's cleanup looks for what the deployment made; if a cancel returned while the call that
makes an instance went on in its thread, the instance would appear after the cleanup and leak.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from diskio.keepalive import in_thread

WAIT = 30.0


def test_a_cancel_waits_for_the_call_under_way_then_propagates() -> None:
    entered, go = threading.Event(), threading.Event()
    made: list[str] = []

    def make() -> str:
        entered.set()
        go.wait(WAIT)
        made.append("instance")
        return "instance"

    async def run() -> None:
        seen = asyncio.Event()
        call = in_thread(make, on_cancel=seen.set)
        await asyncio.to_thread(entered.wait, WAIT)
        call.cancel()
        # The cancel has been delivered, and the call is still under way: the caller must still wait.
        await asyncio.wait_for(seen.wait(), WAIT)
        assert not call.done() and made == []
        go.set()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert made == ["instance"], "the cancel propagated only once the call had returned"

    asyncio.run(run())


def test_a_cancel_before_the_call_starts_keeps_it_from_starting() -> None:
    release = threading.Event()
    ran: list[str] = []

    async def run() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
        busy = asyncio.Event()

        def occupy() -> None:
            loop.call_soon_threadsafe(busy.set)
            release.wait(WAIT)

        first = in_thread(occupy)
        await asyncio.wait_for(busy.wait(), WAIT)
        queued = in_thread(ran.append, "ran")
        await asyncio.sleep(0)  # let it reach the executor's queue
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        release.set()
        await first
        # The one worker thread is free now; had the cancelled call stayed queued, it would run next.
        await in_thread(lambda: None)
        assert ran == []

    asyncio.run(run())
