"""Where the suite's time goes: peers' set-up, guest builds and the tests themselves.

``make test`` prints pytest's ``--durations`` and, at the end, one line from this plugin, so the
README's figures and the next test's budget come from the run itself, not from memory:

    suite: 2100 s in all; peers set-up 300 s, guest builds 400 s, tests 1400 s

Peers are the fixtures defined under ``tests/peers`` plus the embedded ``stack``; a guest build is
time a test spent waiting in ``tests.guests.debian.build_debian_guest`` (a cache hit costs nothing;
builds started in the background at session start overlap the tests and are shown apart); the rest
is the tests' own time, boots and morphs included.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Generator
from typing import Any

import pytest

PEER_FIXTURES = {"stack"}
_spent: defaultdict[str, float] = defaultdict(float)
_started = time.monotonic()


def record(phase: str, seconds: float) -> None:
    """Add ``seconds`` to ``phase``; used by the guest builder's wrapper."""
    _spent[phase] += seconds


def _is_peer(fixturedef: Any) -> bool:
    module = getattr(fixturedef.func, "__module__", "") or ""
    return fixturedef.argname in PEER_FIXTURES or module.startswith("tests.peers")


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> Generator[None, None, None]:
    if not _is_peer(fixturedef):
        yield
        return
    start = time.monotonic()
    guest_before = _spent["guest builds"]
    yield
    # A peer fixture that builds a guest (the vSphere VM holding it) counts that build once, as a build.
    _spent["peers set-up"] += time.monotonic() - start - (_spent["guest builds"] - guest_before)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    total = time.monotonic() - _started
    peers, guests = _spent["peers set-up"], _spent["guest builds"]
    background = _spent["background guest builds"]
    terminalreporter.write_line(
        f"suite: {total:.0f} s in all; peers set-up {peers:.0f} s, guest builds {guests:.0f} s, "
        f"tests {total - peers - guests:.0f} s"
        + (f" (guest builds in the background, overlapping the tests: {background:.0f} s)" if background else "")
    )
