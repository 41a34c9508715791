"""``core.polling.poll_until``."""

from __future__ import annotations

import time

import pytest

from core.polling import poll_until


def test_returns_the_first_result() -> None:
    calls = iter([None, None, 0, 5])
    assert poll_until(time.monotonic() + 5, 0.001, lambda: next(calls)) == 0


def test_none_after_the_deadline_with_one_last_look() -> None:
    calls: list[float] = []

    def never() -> None:
        calls.append(time.monotonic())

    assert poll_until(time.monotonic() - 1, 10, never) is None
    assert len(calls) == 1


def test_what_raises_to_stop() -> None:
    def failed() -> None:
        raise RuntimeError("went to ERROR")

    with pytest.raises(RuntimeError, match="ERROR"):
        poll_until(time.monotonic() + 5, 0.001, failed)


def test_backoff_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    calls = iter([None] * 6 + [True])
    assert poll_until(time.monotonic() + 5, 0.05, lambda: next(calls), backoff=2, max_interval=0.3)
    assert sleeps == [0.05, 0.1, 0.2, 0.3, 0.3, 0.3]
