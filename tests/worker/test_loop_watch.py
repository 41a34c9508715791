"""The worker's loop watchdog names the call that holds its event loop, and stays quiet otherwise."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from worker.loop_watch import LoopWatch


def _hold_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # a blocking call on the loop, as a synchronous DB write behind a lock is


async def _run(block: float, caplog: pytest.LogCaptureFixture) -> list[str]:
    watch = LoopWatch(threshold=0.3)
    with caplog.at_level(logging.WARNING, logger="sterna.worker.loop"):
        watch.start()
        await asyncio.sleep(0.5)
        if block:
            _hold_the_loop(block)
        await asyncio.sleep(0.5)
        await watch.stop()
    return [r.getMessage() for r in caplog.records if r.name == "sterna.worker.loop"]


def test_a_blocked_loop_is_logged_with_the_blocking_call_and_its_end(caplog: pytest.LogCaptureFixture) -> None:
    messages = asyncio.run(_run(1.5, caplog))
    assert len(messages) == 2, messages
    assert "event loop blocked" in messages[0] and "_hold_the_loop" in messages[0]
    assert "turned again after" in messages[1]
    stalled = float(messages[1].split("after ")[1].split(" s")[0])
    assert stalled >= 1.0, messages[1]


def test_a_turning_loop_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    assert asyncio.run(_run(0, caplog)) == []
