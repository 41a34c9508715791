"""How ``make test`` spreads the suite over pytest-xdist workers (``-n 3 --dist loadgroup``).

The suite is mostly waiting: on a workflow to reach a step, a heartbeat to time out, a peer to answer.
One process leaves the machine's cores idle most of the time, except in the TCG guest runs, which fill
them. So the TCG tests take one worker from the start, and each record-DB backend's stack tests one
more; the rest (module by module) fills whichever worker is free. Each worker is a pytest session of
its own: its own peers, stacks and temporary folders. Run without ``-n``, nothing here applies.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest


def xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


#: the groups that ``make test``'s pytest-xdist workers take first, in this order (see ``group_of``)
FIRST_GROUPS = ("tcg", "stack-sqlite", "stack-postgresql")
#: session fixtures several modules share, started once in the worker that takes their group
SHARED_PEERS = {"openstack": "openstack", "keystone_stack": "openstack",
                "windows_sources": "windows", "windows_base_images": "windows"}


#: the TCG worker's niceness: its QEMU and appliances take what the other workers leave
TCG_NICENESS = 10


def group_of(item: pytest.Item) -> str | None:
    """The pytest-xdist group of ``item`` (``--dist loadgroup``): tests in one group run in one worker.

    * ``tcg``: the guest builds, morphs and boots, in a worker of their own from the start, so that
      their minutes of QEMU overlap everything else (they share one stack, ``guest_runs``);
    * ``stack-<backend>``: a session fixture with a parameter lives once per value at a time, so a
      worker that alternated backends would start and stop stacks over and over;
    * a shared session peer (Keystone and friends, the synthetic Windows disks): started once.
    Everything else goes by module, xdist's default.
    """
    if item.get_closest_marker("tcg"):
        return "tcg"
    names = set(getattr(item, "fixturenames", ()))
    if "stack" in names:
        return f"stack-{item.callspec.params['stack']}"  # type: ignore[attr-defined]
    return next((group for name, group in SHARED_PEERS.items() if name in names), None)


@pytest.hookimpl(hookwrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Generator[None, None, None]:
    """Mark each test's xdist group before xdist's own hook turns the marks into scopes; then order.

    Alone (plain ``pytest``): the TCG tests last, so the guests they need build in the background
    meanwhile (``prebuilt_guests`` in ``tests/conftest.py``). Under xdist (``--no-loadscope-reorder``)
    the scheduler hands out groups in the order they first appear, so the ``FIRST_GROUPS`` lead: the
    TCG worker builds and boots from the start while the other workers take one stack each.
    """
    worker = xdist_worker(config)
    if worker:
        for item in items:
            if group := group_of(item):
                item.add_marker(pytest.mark.xdist_group(group))
    yield  # pytest's own reordering (by session parameters) happens in here
    if worker:
        lost = [item.nodeid for item in items if group_of(item) and "@" not in item.nodeid]
        if lost and config.getvalue("dist") == "loadgroup":
            # Ungrouped, the stack tests would be spread test by test and every worker would start every
            # stack and peer: slower, and not what was asked. Say so instead of running that way.
            raise pytest.UsageError(f"pytest-xdist did not group {lost[0]} (is pytest newer than pyproject allows?)")
        rank = {group: i for i, group in enumerate(FIRST_GROUPS)}
        items.sort(key=lambda item: rank.get(group_of(item) or "", len(rank)))  # stable: else as collected
        return
    tcg = [item for item in items if item.get_closest_marker("tcg")]
    if tcg:
        items[:] = [item for item in items if not item.get_closest_marker("tcg")] + tcg


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Lower the TCG worker's priority before its first test starts its stack, QEMU and appliances.

    The TCG runs are throughput: minutes of emulation that can use every idle cycle. The stack tests
    are latency: a heartbeat, a kill, a cancel that must land while a copy runs. At equal priority
    the TCG work starves them (a load of 15 on 2 cores). Children inherit the niceness, so the
    worker's stack, QEMU and libguestfs run behind the other workers' tests, in their idle time.
    """
    if xdist_worker(item.config) and item.get_closest_marker("tcg") and os.getpriority(os.PRIO_PROCESS, 0) == 0:
        os.nice(TCG_NICENESS)
