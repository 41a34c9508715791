"""``vmware_vsphere`` -> ``local`` through the REST API, with the seed's request shape.

The source is a simulator VM whose disk holds the sample guest (GPT + ext4) as the
streamOptimized VMDK vSphere exports.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from devstack.sample import build_disk
from tests.api.guest_runs import VSPHERE_VM, GuestRuns
from tests.conftest import RunningStack, task, wait_final
from tests.helpers import identical, inventories
from tests.peers.vcsim.arrange import find_vm, snapshot_count, stage_disk
from tests.peers.vcsim.fixtures import vcsim_admin, vcsim_server, vsphere_connection_info

pytestmark = pytest.mark.slow
__all__ = ["vcsim_admin", "vcsim_server", "vsphere_connection_info"]


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("vsphere-guest") / "guest.raw"
    build_disk(raw, size=256 * 1024**2, data_mib=8, seed=7)
    return raw


def _stage(si: vim.ServiceInstance, vm_name: str, raw: Path) -> Any:
    vmdk = raw.with_name(f"{vm_name}.vmdk")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized",
                    str(raw), str(vmdk)], check=True)
    vm = find_vm(si, vm_name)
    stage_disk(si, vm, vmdk)
    return vm


def test_vsphere_to_local_with_seed_shape(stack: RunningStack, vsphere_connection_info: dict[str, Any],
                                          vcsim_admin: vim.ServiceInstance, guest: Path) -> None:
    vm = _stage(vcsim_admin, "DC0_H0_VM0", guest)
    _, dst = inventories(stack, [], 1)
    body = {"migration": {
        "origin": {"type": "vmware_vsphere", "connection_info": vsphere_connection_info},
        "destination": {"type": "local", "connection_info": {"path": str(dst)},
                        "target_environment": {"flavor_name": "m1.small", "network_map": {"DC0_DVPG0": "br0"}}},
        "instances": ["DC0_H0_VM0"],
    }}
    with stack.client() as api:
        m = api._call("POST", "/migrations", body)["migration"]
        final = wait_final(api, m["id"])
        assert final["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in final["tasks"]]
        assert vsphere_connection_info["password"] not in api.http.get("/migrations/detail").text
    [disk] = (dst / "DC0_H0_VM0").glob("*.qcow2")
    assert identical(guest, disk)
    assert 'network="br0"' in (dst / "DC0_H0_VM0" / "domain.xml").read_text()
    assert snapshot_count(vcsim_admin, vm) == 0, "the source snapshot is removed after success"


def test_vsphere_errors_name_their_cause(stack: RunningStack, vsphere_connection_info: dict[str, Any]) -> None:
    with stack.client() as api:
        bad = api.create_endpoint("vc-bad-pw", "vmware_vsphere", {**vsphere_connection_info,
                                                                    "password": "Not-The-Pw-93"})
        result = api.validate_endpoint(bad["id"])
        assert result["valid"] is False and "AuthenticationFailed" in result["message"]
        assert "Not-The-Pw-93" not in result["message"]
        down = api.create_endpoint("vc-down", "vmware_vsphere", {**vsphere_connection_info,
                                                                 "host": "127.0.0.1:1"})
        result = api.validate_endpoint(down["id"])
        assert result["valid"] is False and "127.0.0.1" in result["message"]
        good = api.create_endpoint("vc", "vmware_vsphere", vsphere_connection_info)
        _, dst = inventories(stack, [], 1)
        dest = api.create_endpoint("dst", "local", {"path": str(dst)})
        m = api.create_migration(origin_endpoint_id=good["id"], destination_endpoint_id=dest["id"],
                                 instances=["no-such-vm"])
        final = wait_final(api, m["id"])
    assert final["last_execution_status"] == "ERROR"
    validate = task(final, "no-such-vm", "VALIDATE_MIGRATION_INPUTS")
    assert validate["status"] == "ERROR" and "no-such-vm" in (validate["exception_details"] or "")


@pytest.mark.tcg
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_vsphere_debian_guest_passes_the_local_boot_check(stack: RunningStack, guest_runs: GuestRuns) -> None:
    """The simulator VM's disk holds the bootable Debian test guest; the migrated disk boots under QEMU.

    OS morphing is skipped to keep this test's cost to one TCG boot (the morph is proven by
    ``test_morphing_migration.py``): the unmorphed guest still reaches userspace, which is what the
    boot check requires. The migration runs with the suite's other guest migrations, on a simulator
    of its own (``tests/api/guest_runs.py``).
    """
    final = guest_runs.wait("vsphere")
    assert final["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in final["tasks"]]
    boot = [e["message"] for e in task(final, VSPHERE_VM, "DEPLOY_INSTANCE_RESOURCES")["events"]]
    assert any(e.startswith("Boot check: userspace at ") for e in boot), boot
    assert guest_runs.vsphere_snapshots() == 0
