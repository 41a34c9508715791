"""Keeping a transfer's heartbeat going while it waits on work that moves no bytes.

Completing a remote object, a cloud making an uploaded image usable, reading a disk back: each
can take minutes, longer than an activity's heartbeat timeout. ``beating`` awaits such work and
calls ``report`` every few seconds meanwhile; the caller's report heartbeats the transfer's last
progress, so Temporal sees a live worker, and a cancel arrives (the report raises
``asyncio.CancelledError``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, TypeVar

T = TypeVar("T")
#: seconds between reports while no bytes move (well inside any heartbeat timeout)
HEARTBEAT_EVERY = 2.0


def in_thread(fn: Callable[..., T], *args: Any, on_cancel: Callable[[], None] | None = None) -> asyncio.Future[T]:
    """``fn(*args)`` in the default executor; cancelling it waits for a call already under way.

    A thread cannot be interrupted. ``asyncio.to_thread`` (or a bare ``run_in_executor``) reports a
    cancel at once while the call goes on, so whatever it makes after that (an instance, a snapshot)
    appears after the caller has cleaned up and leaks. Here a cancel that finds the call running
    waits for it to return, then propagates; one that finds it still queued stops it from starting.
    ``on_cancel`` is called (on the loop) when a cancel finds the call running, before the wait.
    """
    return asyncio.ensure_future(_settled(fn, args, on_cancel))


async def _settled(fn: Callable[..., T], args: tuple[Any, ...], on_cancel: Callable[[], None] | None) -> T:
    loop = asyncio.get_running_loop()
    lock = threading.Lock()
    state = {"started": False, "abandoned": False}
    returned: asyncio.Future[None] = loop.create_future()

    def signal() -> None:
        if not returned.done():
            returned.set_result(None)

    def run() -> T | None:
        with lock:
            if state["abandoned"]:
                return None
            state["started"] = True
        try:
            return fn(*args)
        finally:
            with suppress(RuntimeError):  # the loop is gone: nobody waits any more
                loop.call_soon_threadsafe(signal)

    call = loop.run_in_executor(None, run)
    try:
        return await call  # type: ignore[return-value]  # None only when abandoned, never returned
    except asyncio.CancelledError:
        with lock:
            state["abandoned"] = not state["started"]
        if state["started"]:
            if on_cancel is not None:
                on_cancel()
            await asyncio.shield(returned)
        raise


async def beating(report: Callable[[], Awaitable[None]], work: Awaitable[T], *, every: float = HEARTBEAT_EVERY,
                  on_cancel: Callable[[], None] | None = None) -> T:
    """Await ``work``, awaiting ``report()`` every ``every`` seconds until it is done.

    If a report raises (a cancel), ``on_cancel`` is called (to tell a thread to stop early), the
    work is cancelled and waited for, and the error propagates.
    """
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every)
            if done:
                return task.result()
            await report()
    finally:
        if not task.done():
            if on_cancel is not None:
                on_cancel()
            task.cancel()
            # a thread can't be interrupted: let it finish before what it uses is closed
            await asyncio.wait({task})
