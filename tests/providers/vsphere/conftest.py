"""A real vCenter simulator (govmomi + Sterna's shim) and helpers to stage guest disks on it."""

# mypy: allow-untyped-calls
# (pyvmomi's generated data objects and pyVim helpers have untyped signatures)

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from diskio.base import DiskSource
from tests.peers.vcsim import vcsim
from tests.providers.vsphere.staging import copy_extents


@pytest.fixture(scope="module")
def vcsim_server() -> Iterator[vcsim.Vcsim]:
    """One simulator per test module: modules arrange VMs without stepping on each other."""
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img (qemu-utils) is required")
    try:
        server = vcsim.start()
    except vcsim.VcsimUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def connection_info(vcsim_server: vcsim.Vcsim) -> dict[str, Any]:
    return {
        "host": vcsim_server.host,
        "username": vcsim_server.user,
        "password": vcsim_server.password,
        "allow_untrusted": True,
    }


@pytest.fixture(scope="module")
def admin(vcsim_server: vcsim.Vcsim) -> Iterator[vim.ServiceInstance]:
    """A pyvmomi session for arranging the simulator (not the code under test)."""
    host, port = vcsim_server.host.rsplit(":", 1)
    si = SmartConnect(
        host=host,
        port=int(port),
        user=vcsim_server.user,
        pwd=vcsim_server.password,
        disableSslCertValidation=True,
    )
    yield si
    Disconnect(si)


@pytest.fixture
def copy() -> Callable[[DiskSource, Path], int]:
    """The test stand-in for the disk engine's copier."""
    return copy_extents
