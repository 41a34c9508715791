"""The worker's default executor: short blocking calls never queue behind long ones.

Every activity records its task's status and events with ``asyncio.to_thread`` before it heartbeats.
With asyncio's default pool (6 threads on 2 cores) and four Windows morphs plus their snapshot copies
holding threads for minutes, those calls waited past the heartbeat timeout, and the activities failed
on "Heartbeat timeout" five attempts in a row.
"""

from __future__ import annotations

import asyncio
import threading

from core.settings import Settings
from worker.main import blocking_executor

WAIT = 30.0


def test_a_short_call_runs_while_every_disk_activity_holds_threads_for_long_work() -> None:
    settings = Settings(max_disk_activities=4)
    # Both disk queues full, each activity holding a long call (a morph, a copy) and a provider call.
    holders = 2 * 2 * settings.max_disk_activities
    release = threading.Event()

    async def run() -> None:
        asyncio.get_running_loop().set_default_executor(blocking_executor(settings))
        entered, lock = [0], threading.Lock()
        all_in = asyncio.Event()
        loop = asyncio.get_running_loop()

        def long_work() -> None:
            with lock:
                entered[0] += 1
                if entered[0] == holders:
                    loop.call_soon_threadsafe(all_in.set)
            release.wait(2 * WAIT)

        long = [asyncio.ensure_future(asyncio.to_thread(long_work)) for _ in range(holders)]
        try:
            await asyncio.wait_for(all_in.wait(), WAIT)
            assert await asyncio.wait_for(asyncio.to_thread(lambda: "recorded"), WAIT) == "recorded"
            assert not any(f.done() for f in long), "the short call ran while every long one still ran"
        finally:
            release.set()
            await asyncio.gather(*long)

    asyncio.run(run())
