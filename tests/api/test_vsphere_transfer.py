"""``vmware_vsphere`` -> ``local`` transfer: the second execution reads only what CBT reports changed.

The source is a simulator VM (with the in-repo CBT shim, tests/peers/vcsim) whose disk is re-staged
after the "guest" changed some 64 KiB blocks; the replica is compared with the guest's raw image.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from tests.api.test_transfers import replica_of, task_of
from tests.conftest import RunningStack
from tests.helpers import inventories
from tests.peers.vcsim.arrange import find_vm, snapshot_count, stage_disk
from tests.peers.vcsim.fixtures import vcsim_admin, vcsim_server, vsphere_connection_info
from tests.providers.vsphere.staging import MiB, images_identical, make_guest_disk, to_stream_optimized, write_at

pytestmark = pytest.mark.slow
__all__ = ["vcsim_admin", "vcsim_server", "vsphere_connection_info"]

BLOCK = 64 * 1024


def wrote(execution: dict[str, Any]) -> int:
    events = [e["message"] for e in task_of(execution, "REPLICATE_DISKS", "DC0_H0_VM1")["events"]]
    done = next(m for m in events if m.startswith("Replica of"))
    return int(re.search(r"wrote (\d+) bytes", done).group(1))  # type: ignore[union-attr]


def read_bytes(execution: dict[str, Any]) -> int:
    events = [e["message"] for e in task_of(execution, "REPLICATE_DISKS", "DC0_H0_VM1")["events"]]
    done = next(m for m in events if m.startswith("Replica of"))
    assert ("full sync" if execution["number"] == 1 else "incremental, changed areas") in done, events
    return int(re.search(r"read (\d+) bytes", done).group(1))  # type: ignore[union-attr]


# The database backend plays no part in what this checks: one backend keeps the suite's time down.
@pytest.mark.parametrize("stack", ["postgresql"], indirect=True)
def test_vsphere_to_local_transfer_moves_only_cbt_changes(
    stack: RunningStack, vsphere_connection_info: dict[str, Any], vcsim_admin: vim.ServiceInstance, tmp_path: Path
) -> None:
    raw, vmdk = tmp_path / "guest.raw", tmp_path / "guest.vmdk"
    make_guest_disk(raw, 64 * MiB, seed=21)
    to_stream_optimized(raw, vmdk)
    vm = find_vm(vcsim_admin, "DC0_H0_VM1")
    stage_disk(vcsim_admin, vm, vmdk)
    _, dst = inventories(stack, [], 1)
    with stack.client() as api:
        origin = api.create_endpoint(f"vc-{dst.name}", "vmware_vsphere", vsphere_connection_info)["id"]
        dest = api.create_endpoint(f"dst-{dst.name}", "local", {"path": str(dst)})["id"]
        t = api.create_transfer(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["DC0_H0_VM1"],
                                skip_os_morphing=True, destination_environment={"verify_boot": False})
        e1 = api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)
        assert e1["status"] == "COMPLETED", e1
        replica = replica_of(dst, t["id"], "DC0_H0_VM1")
        [replica] = replica.parent.glob("*.raw")
        assert images_identical(raw, replica)
        first_read = read_bytes(e1)

        # The guest changes 8 blocks of 64 KiB, some in data, some in holes.
        offsets = [i * BLOCK for i in random.Random(4).sample(range(64 * MiB // BLOCK), 8)]
        for n, offset in enumerate(offsets):
            write_at(raw, offset, bytes([n + 1]) * BLOCK)
        to_stream_optimized(raw, vmdk)
        stage_disk(vcsim_admin, vm, vmdk)
        changed = len(offsets) * BLOCK

        e2 = api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)
        assert e2["status"] == "COMPLETED", e2
        read, written = read_bytes(e2), wrote(e2)
        print(f"\nvSphere CBT: first execution read {first_read} bytes; second read {read} and wrote {written} "
              f"for {changed} changed")
        assert read <= changed and written <= changed, (read, written)
        assert images_identical(raw, replica)
    assert snapshot_count(vcsim_admin, vm) == 0, "each execution released its snapshot"
