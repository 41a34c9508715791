"""Where the suite's time goes: peers' set-up, guest builds and the tests themselves.

``make test`` prints pytest's ``--durations`` and, at the end, one line from this plugin, so the
README's figures and the next test's budget come from the run itself, not from memory:

    suite: 2100 s in all; peers set-up 300 s, guest builds 400 s, tests 1400 s

Under pytest-xdist (``make test``) the controller prints the wall time, then one such line per worker.

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
#: each xdist worker's phases, by worker id (the controller's view)
_workers: dict[str, dict[str, float]] = {}


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


def pytest_sessionfinish(session: pytest.Session) -> None:
    # An xdist worker hands its figures to the controller, which prints them (``pytest_testnodedown``).
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["phases"] = {**_spent, "in all": time.monotonic() - _started}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    phases = getattr(node, "workeroutput", {}).get("phases")
    if phases:
        _workers[node.gateway.id] = phases


def _line(total: float, spent: dict[str, float]) -> str:
    peers, guests = spent.get("peers set-up", 0.0), spent.get("guest builds", 0.0)
    background = spent.get("background guest builds", 0.0)
    return (f"{total:.0f} s in all; peers set-up {peers:.0f} s, guest builds {guests:.0f} s, "
            f"tests {total - peers - guests:.0f} s"
            + (f" (guest builds in the background, overlapping the tests: {background:.0f} s)" if background else ""))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if hasattr(terminalreporter.config, "workerinput"):
        return
    total = time.monotonic() - _started
    if not _workers:
        terminalreporter.write_line(f"suite: {_line(total, _spent)}")
        return
    terminalreporter.write_line(f"suite: {total:.0f} s in all, on {len(_workers)} pytest-xdist workers; each worker:")
    for name, spent in sorted(_workers.items()):
        terminalreporter.write_line(f"  {name}: {_line(spent['in all'], spent)}")
