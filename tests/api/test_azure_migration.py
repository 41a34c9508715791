"""Azure as a destination through the REST API: Azurite holds the disk bytes, the fake ARM
(``tests/peers/azure/fake_arm.py``, whose docstring says what it models) the control plane.
The real azure-identity / azure-mgmt-* / azure-storage-blob SDKs talk to both.
"""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from azure.identity import ClientSecretCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute import models as cm
from azure.storage.blob import BlobClient

from tests.conftest import RunningStack, task, wait_final, wait_for
from tests.helpers import identical, inventories
from tests.leftovers import deployments_of
from tests.peers.azure.fixtures import ACTION_TAG as TAG
from tests.peers.azure.fixtures import SECRET, AzureCloud, tagged
from workflows.transfer_types import REPLICA_CHUNK

pytestmark = pytest.mark.slow
SUB_BLOCK = 64 * 1024


def _compute(cloud: AzureCloud) -> ComputeManagementClient:
    """The test's own ARM client, to look at the peer independently of the provider."""
    c = cloud.conn
    cred = ClientSecretCredential(c["tenant_id"], c["client_id"], c["client_secret"], authority=cloud.arm.url,
                                  disable_instance_discovery=True, connection_verify=cloud.arm.cert)
    return ComputeManagementClient(cred, c["subscription_id"], base_url=cloud.arm.url,
                                   credential_scopes=[f"{cloud.arm.url}/.default"], connection_verify=cloud.arm.cert)


def _tail(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(-n, 2)
        return f.read()


def _endpoints(api: Any, stack: RunningStack, cloud: AzureCloud, vm: str = "vm-a") -> tuple[str, str, Path]:
    src, _ = inventories(stack, [vm], data_mib=8)
    a = api.create_endpoint(f"inv-{src.name}", "local", {"path": str(src)})
    b = api.create_endpoint(f"azure-{src.name}", "azure", cloud.conn)
    return a["id"], b["id"], src


def _actions(stack: RunningStack, migration_id: str) -> list[str]:
    """The ids that tag what the migration made: its own, or on transfers its deployment's (the action
    that creates the disk, the NICs and the VM tags them with its id)."""
    with stack.client() as api:
        return [migration_id, *deployments_of(stack, api.get_migration(migration_id))]


def _mine(cloud: AzureCloud, rtype: str, stack: RunningStack, migration_id: str) -> list[dict[str, Any]]:
    return tagged(cloud, rtype, _actions(stack, migration_id))


def _upload(migration: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """IMPORT_DISKS's status and the last progress of its page-blob upload. On transfers that task also
    flattens the replica's overlay into the VHD first, whose progress is not the upload's."""
    t = task(migration, "vm-a", "IMPORT_DISKS")
    ups = [p for p in t["progress_updates"] if (p["message"] or "").startswith("Uploading disk")]
    return t["status"], (ups[-1] if ups else None)


def test_local_to_azure_and_back(stack: RunningStack, azure_cloud: AzureCloud, tmp_path: Path) -> None:
    cloud = azure_cloud
    with stack.client() as api:
        origin, dest, src = _endpoints(api, stack, cloud)
        assert api.validate_endpoint(dest)["valid"] is True
        m = api.create_migration(
            origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
            destination_environment={"vm_size": "Standard_D2s_v3", "network_security_group_id": cloud.nsg_id},
            network_map={"VM Network": cloud.subnet_id},
        )
        final = wait_final(api, m["id"])
        assert final["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in final["tasks"]]
        assert SECRET not in api.http.get(f"/migrations/{m['id']}").text
    [vm] = _mine(cloud, "Microsoft.Compute/virtualMachines", stack, m["id"])
    # The VM, its NIC and its disk carry the tag of the one action that made them (found among the migration's).
    made_by = vm["tags"][TAG]
    props = vm["properties"]
    assert props["hardwareProfile"]["vmSize"] == "Standard_D2s_v3"
    [nic_ref] = props["networkProfile"]["networkInterfaces"]
    nic = cloud.arm.get(nic_ref["id"])
    assert nic is not None and nic["tags"][TAG] == made_by
    assert nic["properties"]["ipConfigurations"][0]["properties"]["subnet"]["id"] == cloud.subnet_id
    assert nic["properties"]["networkSecurityGroup"]["id"] == cloud.nsg_id
    assert props["diagnosticsProfile"]["bootDiagnostics"]["enabled"] is True
    disk = cloud.arm.get(props["storageProfile"]["osDisk"]["managedDisk"]["id"])
    assert disk is not None and disk["tags"][TAG] == made_by
    assert disk["properties"]["diskState"] == "Attached"
    assert cloud.arm.sas_granted() == [], "every SAS was revoked"

    # The disk read back through a read SAS is the source as a fixed VHD: the same guest bytes, then
    # the 512-byte footer (its timestamp, UUID and checksum differ from one qemu-img run to the next).
    raw = src / "vm-a" / "disk-0.raw"
    size = raw.stat().st_size
    compute = _compute(cloud)
    grant = compute.disks.begin_grant_access(cloud.conn["resource_group"], disk["name"], cm.GrantAccessData(
        access="Read", duration_in_seconds=600)).result()
    try:
        blob = BlobClient.from_blob_url(grant.access_sas)
        assert blob.get_blob_properties().size == size + 512
        written = [(int(r["start"]), int(r["end"]) + 1) for r in blob.get_page_ranges()[0]]
        back = tmp_path / "back.vhd"
        with open(back, "wb") as out:
            out.truncate(size + 512)
            for start, end in written:
                out.seek(start)
                out.write(blob.download_blob(offset=start, length=end - start).readall())
    finally:
        compute.disks.begin_revoke_access(cloud.conn["resource_group"], disk["name"]).result()
    footer = _tail(back, 512)
    assert footer[:8] == b"conectix" and int.from_bytes(footer[60:64], "big") == 2, "a fixed VHD footer"
    assert int.from_bytes(footer[48:56], "big") == size
    cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vpc", str(raw), str(back)],
                         capture_output=True, text=True, check=False)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    # Zero ranges were never sent: every 64 KiB of every written page range holds data.
    with open(back, "rb") as f:
        for start, end in written:
            for off in range(start, end, SUB_BLOCK):
                f.seek(off)
                piece = f.read(min(SUB_BLOCK, end - off))
                assert piece.count(0) != len(piece), f"a zero range at {off} was sent"
    events = [e["message"] for e in task(final, "vm-a", "IMPORT_DISKS")["events"]]
    done = next(e for e in events if "uploaded:" in e)
    counts = re.search(r"([\d,]+) bytes sent in (\d+) Put Page calls, ([\d,]+) bytes allocated", done)
    assert counts, events
    sent, calls, allocated = (int(g.replace(",", "")) for g in counts.groups())
    assert sum(e - s for s, e in written) == sent
    assert 0 < sent <= allocated < size
    print(f"azure upload: {sent:,} bytes sent in {calls} Put Page calls; {allocated:,} bytes allocated "
          f"in the {size + 512:,}-byte VHD")

    # And back: the VM just made is an Azure source (incremental snapshot, read SAS, page ranges).
    _, dst = inventories(stack, [], 1)
    with stack.client() as api:
        kvm = api.create_endpoint(f"kvm-{dst.name}", "local", {"path": str(dst)})
        back_m = api.create_migration(origin_endpoint_id=dest, destination_endpoint_id=kvm["id"],
                                      instances=[vm["name"]])
        final = wait_final(api, back_m["id"])
    assert final["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in final["tasks"]]
    [copy] = (dst / vm["name"]).glob("*.qcow2")
    assert identical(raw, copy)
    # Only the snapshot's allocated page ranges were read (what the upload wrote), not its 256 MiB. On
    # transfers the replica compares whole chunks: every chunk a written range touches is read whole.
    touched = {i for s, e in written if s < size for i in range(s // REPLICA_CHUNK, -(-min(e, size) // REPLICA_CHUNK))}
    exported = " ".join(e["message"] for e in task(final, vm["name"], "REPLICATE_DISKS")["events"])
    read = re.search(r"read (\d+) bytes", exported)
    assert read and int(read.group(1)) <= len(touched) * REPLICA_CHUNK, (exported, len(touched))
    print(f"azure source: {int(read.group(1)):,} bytes read for {sent:,} written, in {len(touched)} chunks")
    assert cloud.arm.of_type("Microsoft.Compute/snapshots") == [], "source snapshots are removed after the copy"
    assert cloud.arm.sas_granted() == []


def test_azure_errors_are_clear(stack: RunningStack, azure_cloud: AzureCloud) -> None:
    cloud = azure_cloud
    with stack.client() as api:
        assert {4, 8, 16, 128, 512} <= set(api.providers()["azure"]["types"])
        bad = api.create_endpoint("azure-bad-secret", "azure", {**cloud.conn, "client_secret": "not-the-secret-9"})
        result = api.validate_endpoint(bad["id"])
        assert result["valid"] is False and "client secret is wrong" in result["message"], result
        assert "not-the-secret-9" not in result["message"]

        origin, dest, _src = _endpoints(api, stack, cloud)
        # The validation errors come at create time, as a 400 in Coriolis's format, and nothing is written.
        missing = f"{cloud.vnet_id}/subnets/no-such-subnet"
        before = len(api.list_migrations())
        for endpoint, env, nmap, needle in (
                (bad["id"], {}, {"VM Network": cloud.subnet_id}, "client secret is wrong"),
                (dest, {"vm_size": "Standard_Nope_v9"}, {"VM Network": cloud.subnet_id}, "Standard_Nope_v9"),
                (dest, {}, {"VM Network": missing}, "no-such-subnet"),
                (dest, {"network_security_group_id": f"{cloud.group_id}/providers/Microsoft.Network/"
                        "networkSecurityGroups/no-such-nsg"}, {"VM Network": cloud.subnet_id}, "no-such-nsg")):
            r = api.http.post("/migrations", json={"migration": {
                "origin_endpoint_id": origin, "destination_endpoint_id": endpoint, "instances": ["vm-a"],
                "destination_environment": env, "network_map": nmap}})
            assert r.status_code == 400, (needle, r.status_code, r.text)
            error = r.json()["error"]
            assert error["code"] == 400 and needle in error["message"], (needle, error)
            assert SECRET not in r.text and "not-the-secret-9" not in r.text and "Traceback" not in r.text
        assert len(api.list_migrations()) == before, "a refused migration writes nothing"

        # A quota error from ARM comes at deploy time, after the upload: cleanup removes everything.
        cloud.arm.state.core_quota = 1
        quota = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
                                     destination_environment={"vm_size": "Standard_D2s_v3"},
                                     network_map={"VM Network": cloud.subnet_id})
        final = wait_final(api, quota["id"])
    assert final["last_execution_status"] == "ERROR"
    details = task(final, "vm-a", "DEPLOY_INSTANCE_RESOURCES")["exception_details"] or ""
    assert "quota" in details and "Traceback" not in details and SECRET not in details, details
    # The disk was uploaded and then removed, not never made (the ARM fake is this test's alone, so nothing
    # of any action may be left: the same on either path, whichever action's id tagged it).
    assert task(final, "vm-a", "IMPORT_DISKS")["status"] == "COMPLETED"
    for rtype in ("Microsoft.Compute/virtualMachines", "Microsoft.Network/networkInterfaces",
                  "Microsoft.Compute/disks"):
        assert _mine(cloud, rtype, stack, quota["id"]) == [], f"{rtype} left behind after the failure"
        assert cloud.arm.of_type(rtype) == [], f"{rtype} left behind after the failure"
    assert cloud.arm.sas_granted() == []
    for log in (stack.root / "logs").glob("*.log"):
        text = log.read_text(errors="replace")
        assert SECRET not in text and "not-the-secret-9" not in text, f"a secret in {log.name}"
        assert not re.search(r"sig=(?!REDACTED)[A-Za-z0-9%]", text), f"a SAS signature in {log.name}"


def test_cancel_mid_upload_leaves_nothing_and_no_sas(stack: RunningStack, azure_cloud: AzureCloud) -> None:
    cloud = azure_cloud
    with stack.client() as api:
        origin, dest, _src = _endpoints(api, stack, cloud)
        m = api.create_migration(
            origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
            destination_environment={"vm_size": "Standard_B2s", "bandwidth_limit": 1024 * 1024},
            network_map={"VM Network": cloud.subnet_id},
        )

        def uploading() -> bool:
            status, p = _upload(api.get_migration(m["id"]))
            return status == "RUNNING" and bool(p and p["current_step"]) and bool(cloud.arm.sas_granted())

        wait_for(uploading, 120, 0.2, "upload under way, its write SAS granted")
        [disk] = _mine(cloud, "Microsoft.Compute/disks", stack, m["id"])
        assert disk["properties"]["diskState"] == "ActiveUpload"
        api.cancel_migration(m["id"])
        final = wait_final(api, m["id"], timeout=120)
    assert final["last_execution_status"] == "CANCELED"
    assert task(final, "vm-a", "CLEANUP_MIGRATION_RESOURCES")["status"] == "COMPLETED"
    for rtype in ("Microsoft.Compute/virtualMachines", "Microsoft.Network/networkInterfaces",
                  "Microsoft.Compute/disks", "Microsoft.Compute/snapshots"):
        assert cloud.arm.of_type(rtype) == [], f"{rtype} left behind after the cancel"
    assert cloud.arm.sas_granted() == []
    # The disk's blob (and with it any URL a SAS granted on it) is gone from Azurite too.
    assert not cloud.arm.blobs.get_container_client(disk["_container"]).exists()


# SQLite only (~22 s, most of it the heartbeat timeout): the checkpoint and the kept SAS are files in
# scratch, not records, and a killed worker on PostgreSQL is test_aws_migration's.
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_worker_killed_mid_upload_resumes_from_checkpoint(stack: RunningStack, azure_cloud: AzureCloud,
                                                          tmp_path: Path) -> None:
    cloud = azure_cloud
    with stack.client() as api:
        origin, dest, src = _endpoints(api, stack, cloud)
        m = api.create_migration(
            origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
            destination_environment={"vm_size": "Standard_B2s", "bandwidth_limit": 2 * 1024 * 1024},
            network_map={"VM Network": cloud.subnet_id},
        )

        def a_third() -> bool:
            _, p = _upload(api.get_migration(m["id"]))
            return bool(p and p["total_steps"] and p["current_step"] > p["total_steps"] // 3)

        wait_for(a_third, 120, 0.2, "a third of the upload")
        worker = stack.stack.procs["worker"]
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        assert len(cloud.arm.sas_granted()) == 1, "the killed upload left its write SAS granted"
        stack.stack.restart("worker")
        final = wait_final(api, m["id"], timeout=240)
    assert final["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in final["tasks"]]
    events = [e["message"] for e in task(final, "vm-a", "IMPORT_DISKS")["events"]]
    assert any("resuming from the checkpoint" in e for e in events), events
    done = next(e for e in events if "uploaded:" in e)
    counts = re.search(r"\((\d+) chunks, (\d+) resumed from the checkpoint\)", done)
    assert counts, events
    total, resumed = int(counts.group(1)), int(counts.group(2))
    assert 0 < resumed < total, done
    print(f"resumed upload: {resumed} of {total} chunks from the checkpoint")
    assert cloud.arm.sas_granted() == []
    [vm] = _mine(cloud, "Microsoft.Compute/virtualMachines", stack, m["id"])
    assert len(_mine(cloud, "Microsoft.Compute/disks", stack, m["id"])) == 1, "one disk: the upload was not restarted"
    disk = cloud.arm.get(vm["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"])
    assert disk is not None
    blob = cloud.arm.blob(disk)  # the test's own look at Azurite (account key)
    raw = src / "vm-a" / "disk-0.raw"
    back = tmp_path / "back.vhd"
    with open(back, "wb") as out:
        out.truncate(blob.get_blob_properties().size)
        for r in blob.get_page_ranges()[0]:
            out.seek(r["start"])
            out.write(blob.download_blob(offset=r["start"], length=r["end"] + 1 - r["start"]).readall())
    cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vpc", str(raw), str(back)],
                         capture_output=True, text=True, check=False)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    assert not list((stack.root / "scratch").rglob("*.write-sas")), "the kept SAS is removed once revoked"
