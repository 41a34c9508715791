"""The worker's loop watchdog names the call that holds its event loop, and stays quiet otherwise."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

import pytest

from tests.conftest import wait_for
from worker.loop_watch import LoopWatch


def _hold_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # a blocking call on the loop, as a synchronous DB write behind a lock is


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sterna.worker.loop"]


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> None:
    """Until the watch has logged a record holding ``text`` (polled in a thread: the loop goes on)."""
    await asyncio.to_thread(wait_for, lambda: any(text in m for m in _messages(caplog)), 10, 0.05,
                            f"a record with {text!r}")


async def _run(block: float, caplog: pytest.LogCaptureFixture) -> list[str]:
    watch = LoopWatch(threshold=0.5)
    with caplog.at_level(logging.WARNING, logger="sterna.worker.loop"):
        watch.start()
        # A window of turning loop, long enough for a false stall report to show
        await asyncio.sleep(1.0)
        if block:
            _hold_the_loop(block)
            await _logged(caplog, "turned again")
        await watch.stop()
    return _messages(caplog)


def test_a_blocked_loop_is_logged_with_the_blocking_call_and_its_end(caplog: pytest.LogCaptureFixture) -> None:
    # (a loaded host may add "did not run Python" records: not the subject here)
    messages = [m for m in asyncio.run(_run(2.0, caplog)) if "event loop" in m]
    assert len(messages) == 2, messages
    assert "event loop blocked" in messages[0] and "_hold_the_loop" in messages[0]
    assert "turned again after" in messages[1]
    stalled = float(messages[1].split("after ")[1].split(" s")[0])
    assert stalled >= 1.5, messages[1]


def test_a_turning_loop_is_never_reported_blocked(caplog: pytest.LogCaptureFixture) -> None:
    messages = asyncio.run(_run(0, caplog))
    assert not any("event loop blocked" in m for m in messages), messages


def test_a_stopped_process_is_told_apart_from_a_blocked_loop(caplog: pytest.LogCaptureFixture) -> None:
    """SIGSTOP freezes the watchdog's thread as well: what it then finds is no loop stall."""
    async def run() -> list[str]:
        with caplog.at_level(logging.WARNING, logger="sterna.worker.loop"):
            watch = LoopWatch(threshold=0.5)
            watch.start()
            # The watch thread takes its first reading before the stop: a thread started while the
            # process is stopped would see no gap at all.
            await asyncio.sleep(0.5)
            # A helper process stops this one for 2 s, then lets it go on.
            helper = await asyncio.create_subprocess_exec(sys.executable, "-c", (
                "import os, signal, sys, time; pid = int(sys.argv[1]); os.kill(pid, signal.SIGSTOP); "
                "time.sleep(2.0); os.kill(pid, signal.SIGCONT)"), str(os.getpid()))
            await helper.wait()
            await _logged(caplog, "did not run Python")
            await watch.stop()
        return _messages(caplog)

    messages = asyncio.run(run())
    assert any("did not run Python for" in m for m in messages), messages
    assert not any("event loop blocked" in m for m in messages), messages
