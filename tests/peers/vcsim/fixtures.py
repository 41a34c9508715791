"""Pytest fixtures for the vSphere simulator; import them into a ``conftest.py`` to use them.

    from tests.peers.vcsim.fixtures import vcsim_admin, vcsim_server, vsphere_connection_info

One simulator per test module, so that modules can reconfigure VMs without seeing each other.
"""

# mypy: allow-untyped-calls
# (pyVim helpers have untyped signatures)

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from pyVim.connect import Disconnect
from pyVmomi import vim

from tests.peers.vcsim import vcsim
from tests.peers.vcsim.arrange import admin_session


@pytest.fixture(scope="module")
def vcsim_server() -> Iterator[vcsim.Vcsim]:
    """A running simulator (TLS, self-signed, one accepted user)."""
    if shutil.which("qemu-img") is None:
        pytest.fail("qemu-img (qemu-utils) is required by the simulator's change tracking: run make sysdeps")
    try:
        server = vcsim.start()
    except vcsim.VcsimUnavailable as exc:
        pytest.fail(f"the vSphere simulator could not be built or started: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def vsphere_connection_info(vcsim_server: vcsim.Vcsim) -> dict[str, Any]:
    """``connection_info`` of a ``vmware_vsphere`` endpoint pointing at the simulator."""
    return {
        "host": vcsim_server.host,
        "username": vcsim_server.user,
        "password": vcsim_server.password,
        "allow_untrusted": True,
    }


@pytest.fixture(scope="module")
def vcsim_admin(vcsim_server: vcsim.Vcsim) -> Iterator[vim.ServiceInstance]:
    """A pyvmomi session for arranging the simulator (not the code under test)."""
    si = admin_session(vcsim_server)
    yield si
    Disconnect(si)
