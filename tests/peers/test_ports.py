"""``free_port``: the suite's servers get ports no other test process, nor the kernel's ``bind(0)``, hands out."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest

from tests import peers
from tests.peers import _port_range, free_port


def test_ports_lie_below_the_kernels_ephemeral_range_and_are_never_given_twice() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(p < 32768 and p in _port_range() for p in ports), ports
    with socket.socket() as s:  # what bind(0) gives is never one of them
        s.bind(("127.0.0.1", 0))
        assert s.getsockname()[1] not in ports


def test_a_port_another_process_reserved_is_not_given_while_it_lives(monkeypatch: pytest.MonkeyPatch) -> None:
    # The other process reserves ports until told to exit; this one must get none of them.
    code = textwrap.dedent("""
        import sys
        from tests.peers import free_port
        print(" ".join(str(free_port()) for _ in range(200)), flush=True)
        sys.stdin.read()
    """)
    other = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None
        theirs = {int(p) for p in other.stdout.readline().split()}
        assert len(theirs) == 200
        # Narrow the choice to their ports plus some others: we may get only the others.
        spare = [p for p in range(20000, 20200) if p not in theirs][:40]
        monkeypatch.setattr(peers, "_port_range", lambda: sorted(theirs | set(spare)))
        mine = {free_port() for _ in range(5)}
        assert len(mine) == 5 and not mine & theirs, mine & theirs
    finally:
        other.communicate("")
