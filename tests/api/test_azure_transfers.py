"""Azure as a source through the REST API: a VM of the fake ARM whose managed disk's bytes live in
Azurite, replicated to a local destination, changed by 64 MiB, and replicated again; and a
migration from it cancelled while its snapshot is read.

The second execution reads every allocated page of the new snapshot and writes only the chunks
whose digest changed: Azure's page-range diff against the previous snapshot (``prevsnapshot``)
would let it read only the changes, but Azurite answers that call 501, so it is not used.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest
from azure.identity import ClientSecretCredential
from azure.mgmt.compute import ComputeManagementClient

from tests.api.test_transfers import task_of
from tests.conftest import RunningStack, wait_final, wait_for
from tests.helpers import export_progress, inventories
from tests.peers.azure.fixtures import AzureCloud

pytestmark = pytest.mark.slow
MiB = 1024**2
SIZE = 256 * MiB
PIECE = MiB


def _compute(cloud: AzureCloud) -> ComputeManagementClient:
    """The test's own ARM client: the source VM is made through the API a user's tooling would use."""
    c = cloud.conn
    cred = ClientSecretCredential(c["tenant_id"], c["client_id"], c["client_secret"], authority=cloud.arm.url,
                                  disable_instance_discovery=True, connection_verify=cloud.arm.cert)
    return ComputeManagementClient(cred, c["subscription_id"], base_url=cloud.arm.url,
                                   credential_scopes=[f"{cloud.arm.url}/.default"], connection_verify=cloud.arm.cert)


def source_vm(cloud: AzureCloud, name: str, data: int, seed: int) -> tuple[Any, bytearray]:
    """A 256 MiB managed disk with ``data`` bytes written at scattered 1 MiB slots, attached to a VM.

    Returns the disk's page blob (the test's own account-key view of Azurite) and the disk's
    expected content.
    """
    compute: Any = _compute(cloud)
    rg, loc = cloud.conn["resource_group"], cloud.conn["location"]
    # Created for upload, written through its page blob and sealed, as an upload leaves a disk; 256
    # MiB keeps the test's own comparisons cheap.
    compute.disks.begin_create_or_update(rg, f"{name}-os", {"location": loc, "properties": {
        "creationData": {"createOption": "Upload", "uploadSizeBytes": SIZE + 512}}}).result()
    compute.disks.begin_grant_access(rg, f"{name}-os", {"access": "Write", "durationInSeconds": 600}).result()
    disk = compute.disks.get(rg, f"{name}-os")
    blob = cloud.arm.blob(cloud.arm.get(str(disk.id)) or {})
    image = bytearray(SIZE)
    write_scattered(blob, image, data, seed)
    compute.disks.begin_revoke_access(rg, f"{name}-os").result()
    nic = cloud.arm.put(f"{cloud.group_id}/providers/Microsoft.Network/networkInterfaces/{name}-nic", {
        "type": "Microsoft.Network/networkInterfaces", "location": loc,
        "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": {"subnet": {"id": cloud.subnet_id}}}],
                       "macAddress": "00-0D-3A-11-22-33"}})
    compute.virtual_machines.begin_create_or_update(rg, name, {
        "location": loc, "properties": {
            "hardwareProfile": {"vmSize": "Standard_B2s"},
            "storageProfile": {"osDisk": {"createOption": "Attach", "osType": "Linux",
                                          "managedDisk": {"id": disk.id}}},
            "networkProfile": {"networkInterfaces": [{"id": nic["id"]}]}}}).result()
    return blob, image


def write_scattered(blob: Any, image: bytearray, total: int, seed: int) -> int:
    """Random bytes in 1 MiB pieces at scattered slots, written to the page blob and to ``image``."""
    rng = random.Random(seed)
    for slot in rng.sample(range(len(image) // PIECE), total // PIECE):
        piece = rng.randbytes(PIECE)
        image[slot * PIECE:(slot + 1) * PIECE] = piece
        blob.upload_page(piece, offset=slot * PIECE, length=PIECE)
    return total


def replica_equals(path: Path, image: bytearray) -> bool:
    if path.stat().st_size != len(image):
        return False
    with path.open("rb") as f:
        for off in range(0, len(image), 16 * MiB):
            if f.read(16 * MiB) != image[off:off + 16 * MiB]:
                return False
    return True


# SQLite only (~30 s on a loaded machine, most of it two executions' own steps): the digest map
# and the marker go through PostgreSQL in test_incremental, and the Azure calls don't depend on it.
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_azure_to_local_transfer_second_execution_writes_only_the_changes(
        stack: RunningStack, azure_cloud: AzureCloud) -> None:
    cloud = azure_cloud
    blob, image = source_vm(cloud, "az-src", 16 * MiB, seed=21)
    _, dst = inventories(stack, [], 1)
    with stack.client() as api:
        a = api.create_endpoint(f"az-src-{dst.name}", "azure", cloud.conn)
        b = api.create_endpoint(f"kvm-{dst.name}", "local", {"path": str(dst)})
        t = api.create_transfer(origin_endpoint_id=a["id"], destination_endpoint_id=b["id"], instances=["az-src"],
                                skip_os_morphing=True, destination_environment={"verify_boot": False})
        e1 = api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)
        assert e1["status"] == "COMPLETED", [x["exception_details"] for x in e1["tasks"]]
        [replica] = (dst / ".sterna-replicas" / t["id"] / "az-src").glob("*.raw")
        assert replica_equals(replica, image)

        # 64 MiB change, through the disk's blob as a running guest's writes would land: in data and holes.
        changed = write_scattered(blob, image, 64 * MiB, seed=22)
        e2 = api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)
        assert e2["status"] == "COMPLETED", [x["exception_details"] for x in e2["tasks"]]
        written = _written(e2)
        print(f"\nazure source: second execution wrote {written:,} bytes for {changed:,} changed "
              f"({written / changed:.3f}x)")
        assert written <= 1.05 * changed
        assert replica_equals(replica, image)
    assert cloud.arm.of_type("Microsoft.Compute/snapshots") == [], "each execution's snapshot is removed"
    assert cloud.arm.sas_granted() == []


def _written(execution: dict[str, Any]) -> int:
    events = [e["message"] for e in task_of(execution, "REPLICATE_DISKS", "az-src")["events"]]
    found = [int(m.group(1)) for e in events if (m := re.search(r"wrote (\d+) bytes", e))]
    assert found, events
    return sum(found)


# SQLite only (~10 s): test_azure_migration cancels an upload on both backends.
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_cancel_mid_read_from_azure_leaves_no_snapshot_and_no_sas(stack: RunningStack,
                                                                   azure_cloud: AzureCloud) -> None:
    cloud = azure_cloud
    source_vm(cloud, "az-slow", 16 * MiB, seed=23)
    _, dst = inventories(stack, [], 1)
    with stack.client() as api:
        a = api.create_endpoint(f"az-slow-{dst.name}", "azure", cloud.conn)
        b = api.create_endpoint(f"kvm-slow-{dst.name}", "local", {"path": str(dst)})
        m = api.create_migration(origin_endpoint_id=a["id"], destination_endpoint_id=b["id"], instances=["az-slow"],
                                 source_environment={"bandwidth_limit": 1024 * 1024}, skip_os_morphing=True)
        wait_for(lambda: export_progress(api.get_migration(m["id"]))[0] > 0 and bool(cloud.arm.sas_granted()),
                 120, 0.2, "the read under way, the snapshot's read SAS granted")
        [snap] = cloud.arm.of_type("Microsoft.Compute/snapshots")
        assert snap["properties"]["diskState"] == "ActiveSAS"
        api.cancel_migration(m["id"])
        final = wait_final(api, m["id"], timeout=120)
    assert final["last_execution_status"] == "CANCELED"
    assert cloud.arm.of_type("Microsoft.Compute/snapshots") == [], "the source snapshot is removed"
    assert cloud.arm.sas_granted() == []
    assert not cloud.arm.blobs.get_container_client(snap["_container"]).exists()
    [disk] = cloud.arm.of_type("Microsoft.Compute/disks")
    assert disk["properties"]["diskState"] == "Attached", "the source VM's own disk is untouched"
