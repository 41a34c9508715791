"""VMs whose VMware Tools run: quiesced snapshots and guest shutdown."""

# mypy: allow-untyped-calls
# (pyvmomi's generated data objects have untyped constructors)

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from providers.vsphere.provider import VsphereProvider
from tests.peers.vcsim import vcsim
from tests.peers.vcsim.arrange import find_vm, snapshot_trees


@pytest.fixture(scope="module")
def vcsim_server() -> Iterator[vcsim.Vcsim]:
    """Overrides the package fixture: this module's simulator reports running VMware Tools."""
    try:
        server = vcsim.start(tools=True)
    except vcsim.VcsimUnavailable as exc:
        pytest.fail(f"the vSphere simulator could not be built or started: {exc}")
    try:
        yield server
    finally:
        server.stop()


def test_snapshot_is_quiesced_when_tools_run(
    vsphere_connection_info: dict[str, Any], vcsim_admin: vim.ServiceInstance, tmp_path: Path
) -> None:
    provider = VsphereProvider(vsphere_connection_info)
    vm = find_vm(vcsim_admin, "DC0_H0_VM0")
    snap = provider.snapshot_instance({}, "DC0_H0_VM0", tmp_path / "w")
    try:
        (tree,) = snapshot_trees(vcsim_admin, vm)
        assert tree.quiesced is True
        assert tree.snapshot._moId == snap.snapshot_id
    finally:
        provider.delete_snapshot(snap)
    assert snapshot_trees(vcsim_admin, vm) == []


def test_shutdown_asks_the_guest_first(
    vsphere_connection_info: dict[str, Any], vcsim_admin: vim.ServiceInstance
) -> None:
    provider = VsphereProvider(vsphere_connection_info)
    vm = find_vm(vcsim_admin, "DC0_H0_VM1")
    provider.shutdown_instance({}, "DC0_H0_VM1")
    assert provider.get_instance({}, "DC0_H0_VM1").power_state == "poweredOff"
    spec = vim.event.EventFilterSpec(entity=vim.event.EventFilterSpec.ByEntity(entity=vm, recursion="self"))
    events: Any = vcsim_admin.content.eventManager
    kinds = {type(e).__name__.split(".")[-1] for e in events.QueryEvents(spec)}
    assert "VmGuestShutdownEvent" in kinds  # a clean guest shutdown, not a power cut
