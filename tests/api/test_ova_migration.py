"""An OVA built with qemu-img plus an OVF descriptor migrates to ``local`` through the REST API."""

from __future__ import annotations

import pytest

from devstack.sample import build_disk
from tests.conftest import RunningStack, wait_final
from tests.helpers import identical, inventories
from tests.providers.ova.packages import build_vmware_ova

pytestmark = pytest.mark.slow


def test_ova_to_local(stack: RunningStack) -> None:
    library, dst = inventories(stack, [], 1)
    raw = stack.root / "ova-guest.raw"
    build_disk(raw, size=128 * 1024**2, data_mib=4, seed=11)
    build_vmware_ova(library, "web01", raw)
    with stack.client() as api:
        src = api.create_endpoint("ovas", "ova", {"path": str(library)})
        dest = api.create_endpoint("kvm", "local", {"path": str(dst)})
        [listed] = api.list_instances(src["id"])
        assert listed["num_cpu"] == 2 and listed["memory_mb"] == 2048 and listed["firmware_type"] == "EFI"
        m = api.create_migration(origin_endpoint_id=src["id"], destination_endpoint_id=dest["id"],
                                 instances=[listed["id"]], network_map={"VM Network": "br-ova"})
        final = wait_final(api, m["id"])
    assert final["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in final["tasks"]]
    [disk] = (dst / listed["name"]).glob("*.qcow2")
    assert identical(raw, disk)
    domain = (dst / listed["name"] / "domain.xml").read_text()
    assert 'network="br-ova"' in domain and 'firmware="efi"' in domain and "<vcpu>2</vcpu>" in domain
