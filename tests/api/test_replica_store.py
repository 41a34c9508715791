"""Transfers to OpenStack, Azure and GCP through the REST API: their replica disks are raw files in Sterna's
replica store (``providers.replica_store``), and a deployment uploads the flattened overlay in the cloud's
format. The peers: the real Keystone and Glance with the fake Nova, Azurite with the fake ARM, the GCS
emulator with the fake Compute Engine.

OS morphing is skipped (the sample disks hold no OS): what is checked is the bytes that reach the cloud.
On SQLite (the Keystone stack's, and the ``stack`` fixture's sqlite half): the replica records go through
PostgreSQL in ``test_incremental``, and nothing here depends on the backend.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_transfers import bytes_written, same_bytes, scatter, sha256
from tests.conftest import RunningStack, wait_final
from tests.helpers import api_env, identical, inventories
from tests.peers.azure.fixtures import AzureCloud, read_managed_disk
from tests.peers.gce import FakeComputeEngine
from tests.peers.gcp import gcs_download, gcs_objects
from tests.peers.openstack.fixtures import KeystoneStack, OpenStackCloud
from tests.providers.openstack.test_provider import creds

pytestmark = pytest.mark.slow
MiB = 1024**2
OPENSTACK_ENV = {"flavor_name": "m1.small", "verify_boot": False}
OPENSTACK_NETWORKS = {"VM Network": "private"}


def store_of(stack: RunningStack, transfer_id: str) -> Path:
    return stack.settings.replica_store / transfer_id


def _errors(action: dict[str, Any]) -> list[Any]:
    return [t["exception_details"] for t in action["tasks"] if t["exception_details"]]


def _execute(api: Any, transfer_id: str) -> dict[str, Any]:
    e = api.wait_execution(transfer_id, api.execute_transfer(transfer_id)["id"], 300)
    assert e["status"] == "COMPLETED", _errors(e)
    return dict(e)


def _deploy(api: Any, transfer_id: str) -> dict[str, Any]:
    d = api.wait_deployment(api.create_deployment(transfer_id, skip_os_morphing=True)["id"], 300)
    assert d["last_execution_status"] == "COMPLETED", _errors(d)
    return dict(d)


def glance_image(cloud: OpenStackCloud, image_id: str, out: Path) -> dict[str, Any]:
    """The image as the real Glance has it (Alice's project), its bytes written to ``out``."""
    session = cloud.peers.session("alice")
    glance = cloud.peers.servers["glance"].url
    image: dict[str, Any] = session.get(f"{glance}/v2/images/{image_id}").json()
    out.write_bytes(session.get(f"{glance}/v2/images/{image_id}/file").content)
    return image


# ~30 s. On the Keystone stack, whose OpenStack peers the suite starts anyway (the "openstack" xdist group).
def test_openstack_transfer_syncs_only_changes_deploys_into_glance_and_syncs_on(keystone_stack: KeystoneStack,
                                                                              tmp_path: Path) -> None:
    stack, vm = keystone_stack, "vm-store-os"
    assert stack.cloud is not None
    src, _ = inventories(stack, [vm], data_mib=16)
    source = src / vm / "disk-0.raw"
    with stack.as_user("alice") as api:
        origin = api.create_endpoint(f"inv-{src.name}", "local", {"path": str(src)})["id"]
        # Credentials of its own (a same-cloud transfer, through its trust: test_keystone_transfers).
        dest = api.create_endpoint(f"os-{src.name}", "openstack", creds(stack.cloud))["id"]
        t = api.create_transfer(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=[vm],
                                skip_os_morphing=True, destination_environment=OPENSTACK_ENV,
                                network_map=OPENSTACK_NETWORKS)
        _execute(api, t["id"])
        replica = store_of(stack, t["id"]) / vm / "disk-0.raw"
        assert same_bytes(source, replica)

        changed = scatter(source, 8 * MiB)
        e2 = _execute(api, t["id"])
        written = bytes_written(e2, vm)
        print(f"\nopenstack destination: second execution wrote {written} bytes into the replica store "
              f"for {changed} changed ({written / changed:.3f}x)")
        assert written <= 1.05 * changed
        assert same_bytes(source, replica)

        digest = sha256(replica)
        d = _deploy(api, t["id"])
        [disk] = d["transfer_result"][vm]["details"]["disks"]
        image = glance_image(stack.cloud, disk["image_id"], tmp_path / "from-glance.qcow2")
        assert image["status"] == "active" and image["disk_format"] == "qcow2"
        assert identical(source, tmp_path / "from-glance.qcow2"), "the image in Glance equals the source disk"
        server = next(c for c in stack.cloud.nova.created if c["id"] == d["transfer_result"][vm]["id"])
        assert server["body"]["server"]["imageRef"] == disk["image_id"]
        assert sha256(replica) == digest, "the deployment never wrote into the replica"

        # Disaster recovery goes on beside the deployed server of the same name: an execution deploys nothing.
        scatter(source, 1 * MiB, seed=11)
        _execute(api, t["id"])
        assert same_bytes(source, replica)
        # A second deployment would make a second server of that name (Nova takes it): refused, nothing left.
        again = api.wait_deployment(api.create_deployment(t["id"], skip_os_morphing=True)["id"], 300)
        assert again["last_execution_status"] == "ERROR"
        assert any(f"A server named '{vm}' already exists" in (e or "") for e in _errors(again)), _errors(again)
        assert [c["body"]["server"]["name"] for c in stack.cloud.nova.created].count(vm) == 1
        session, glance = stack.cloud.peers.session("alice"), stack.cloud.peers.servers["glance"].url
        images = session.get(f"{glance}/v2/images", params={"tag": "sterna"}).json()["images"]
        assert not [i for i in images if i.get("sterna_migration_id") == again["id"]], "its image is deleted"

        [volume] = api.get_transfer(t["id"], include_task_info=True)["info"][vm]["volumes_info"]
        assert volume["volume_id"] == str(replica)
        removed = api.delete_transfer_disks(t["id"])
        assert removed["type"] == "transfer_disks_delete"
        assert f"Removed replica disks {store_of(stack, t['id'])}" in removed["removed"]
        assert not store_of(stack, t["id"]).exists()
        assert api.get_transfer(t["id"], include_task_info=True)["info"][vm]["volumes_info"] == []


# ~20 s: the API is restarted twice (on, then off).
def test_a_migration_to_the_same_cloud_runs_as_a_transfer_and_leaves_no_replica(keystone_stack: KeystoneStack,
                                                                               tmp_path: Path) -> None:
    stack, vm = keystone_stack, "vm-store-mig"
    assert stack.cloud is not None
    src, _ = inventories(stack, [vm], data_mib=8)
    with api_env(stack, STERNA_MIGRATIONS_ON_TRANSFERS="1"), stack.as_user("alice") as api:
        origin = api.create_endpoint(f"inv-{src.name}", "local", {"path": str(src)})["id"]
        # No connection_info: the caller's own cloud, through the migration's trust.
        dest = api.create_endpoint(f"os-{src.name}", "openstack", {})["id"]
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=[vm],
                                 skip_os_morphing=True, destination_environment=OPENSTACK_ENV,
                                 network_map=OPENSTACK_NETWORKS)
        final = wait_final(api, m["id"])
        transfer = api.get_transfer(m["id"])
        [deployment] = [x for x in api.list_deployments() if x["transfer_id"] == m["id"]]
    assert final["last_execution_status"] == "COMPLETED", _errors(final)
    assert transfer["scenario"] == "live_migration" and final["transfer_id"] == m["id"]
    assert [e["type"] for e in transfer["executions"]] == ["transfer_execution"]
    assert deployment["deployer_id"] == transfer["executions"][0]["id"]
    image_id = final["transfer_result"][vm]["details"]["disks"][0]["image_id"]
    glance_image(stack.cloud, image_id, tmp_path / "from-glance.qcow2")
    assert identical(src / vm / "disk-0.raw", tmp_path / "from-glance.qcow2")
    assert not store_of(stack, m["id"]).exists(), "a migration deploys once: its replica goes"





# ~20 s.
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_azure_transfer_deploys_a_fixed_vhd_from_the_store_and_its_delete_empties_it(
        stack: RunningStack, azure_cloud: AzureCloud, tmp_path: Path) -> None:
    cloud, vm = azure_cloud, "vm-store-az"
    src, _ = inventories(stack, [vm], data_mib=8)
    source = src / vm / "disk-0.raw"
    with stack.client() as api:
        origin = api.create_endpoint(f"inv-{src.name}", "local", {"path": str(src)})["id"]
        dest = api.create_endpoint(f"az-{src.name}", "azure", cloud.conn)["id"]
        t = api.create_transfer(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=[vm],
                                skip_os_morphing=True, destination_environment={"vm_size": "Standard_D2s_v3"},
                                network_map={"VM Network": cloud.subnet_id})
        _execute(api, t["id"])
        replica = store_of(stack, t["id"]) / vm / "disk-0.raw"
        assert same_bytes(source, replica)
        d = _deploy(api, t["id"])
        [vm_row] = [r for r in cloud.arm.of_type("Microsoft.Compute/virtualMachines")
                    if r.get("tags", {}).get("sterna-migration-id") == d["id"]]
        disk = cloud.arm.get(vm_row["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"])
        assert disk is not None
        read_managed_disk(cloud, disk["name"], tmp_path / "back.vhd")
        cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vpc", str(source), str(tmp_path / "back.vhd")],
                             capture_output=True, text=True, check=False)
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
        assert cloud.arm.sas_granted() == []

        api.delete_transfer(t["id"])
    assert not store_of(stack, t["id"]).exists(), "Sterna's own files go with the transfer"


# ~15 s.
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_gcp_transfer_deploys_an_image_from_the_store(stack: RunningStack, gcp_conn_info: dict[str, Any],
                                                      gce: FakeComputeEngine, gcs_url: str, tmp_path: Path) -> None:
    vm = "vm-store-gcp"
    src, _ = inventories(stack, [vm], data_mib=8)
    source = src / vm / "disk-0.raw"
    project, bucket = gcp_conn_info["project_id"], gcp_conn_info["bucket"]
    with stack.client() as api:
        origin = api.create_endpoint(f"inv-{src.name}", "local", {"path": str(src)})["id"]
        dest = api.create_endpoint(f"gcp-{src.name}", "gcp", gcp_conn_info)["id"]
        t = api.create_transfer(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=[vm],
                                skip_os_morphing=True, network_map={"VM Network": "app"},
                                destination_environment={"machine_type": "e2-medium", "keep_image": True,
                                                         "keep_tarball": True})
        _execute(api, t["id"])
        assert same_bytes(source, store_of(stack, t["id"]) / vm / "disk-0.raw")
        d = _deploy(api, t["id"])
    [inst] = gce.projects[project].instances["us-central1-a"].values()
    assert inst["labels"]["sterna-migration-id"] == d["id"]
    [image] = gce.projects[project].images.values()
    [obj] = gcs_objects(gcs_url, bucket, prefix=f"sterna/{d['id']}/")
    assert image["rawDisk"]["source"] == f"https://storage.googleapis.com/{bucket}/{obj['name']}"
    (tmp_path / "disk.tar.gz").write_bytes(gcs_download(gcs_url, bucket, obj["name"]))
    subprocess.run(["tar", "-xSzf", str(tmp_path / "disk.tar.gz"), "-C", str(tmp_path)], check=True)
    # Identical over the source's size; the image's whole GiB is zeros past it.
    cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(source), str(tmp_path / "disk.raw")],
                         capture_output=True, text=True, check=False)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
