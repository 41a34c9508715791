"""The shared workflow helpers: shielded work and the cause of an ``ActivityError``."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.failures import failure_message, root_cause
from workflows.shield import shielded


def activity_error(cause: BaseException) -> ActivityError:
    err = ActivityError("activity task failed", scheduled_event_id=1, started_event_id=2, identity="w",
                        activity_type="export_disk", activity_id="1", retry_state=None)
    err.__cause__ = cause
    return err


def test_root_cause_unwraps_activity_errors() -> None:
    app = ApplicationError("disk gone", type="NotFound")
    assert root_cause(activity_error(app)) is app
    assert failure_message(activity_error(app)) == "disk gone"
    assert failure_message(activity_error(TimeoutError("late"))) == "late"
    assert root_cause(app) is app


async def test_a_cancel_waits_for_shielded_work() -> None:
    started, release, done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        await release.wait()
        done.set()

    outer = asyncio.ensure_future(shielded(work()))
    await started.wait()
    outer.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert done.is_set()


async def test_on_failure_handles_a_failure() -> None:
    seen: list[str] = []

    async def fail() -> None:
        raise activity_error(ApplicationError("boom"))

    async def record(err: ActivityError) -> None:
        seen.append(failure_message(err))

    await shielded(fail(), on_failure=record)
    assert seen == ["boom"]
    with pytest.raises(ActivityError):
        await shielded(fail())
