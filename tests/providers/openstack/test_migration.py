"""End to end through the REST API in keystone mode: local -> openstack, and Barbican connection_info."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest

from tests.conftest import task, wait_final
from tests.helpers import identical, inventories
from tests.peers import temporal_cli
from tests.peers.openstack.fixtures import KeystoneStack
from tests.workflows.test_temporal_view import _payloads, _tree

pytestmark = pytest.mark.slow


def test_local_to_same_cloud_openstack_lands_in_glance_byte_identical(keystone_stack: KeystoneStack,
                                                                         tmp_path: Path) -> None:
    assert keystone_stack.cloud is not None
    cloud = keystone_stack.cloud
    src, _ = inventories(keystone_stack, ["vm-os"], data_mib=16)
    with keystone_stack.as_user("alice") as api:
        origin = api.create_endpoint("lab", "local", {"path": str(src)})["id"]
        # No connection_info: the caller's own cloud, reached through the migration's trust.
        dest = api.create_endpoint("our-cloud", "openstack", {})["id"]
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-os"],
                                 destination_environment={"flavor_name": "m1.small", "security_groups": ["web"],
                                                          "verify_boot": True},
                                 network_map={"VM Network": "private"})
        final = wait_final(api, m["id"])
    assert final["last_execution_status"] == "COMPLETED", [
        (t["task_type"], t["exception_details"]) for t in final["tasks"] if t["exception_details"]]
    deployed = final["transfer_result"]["vm-os"]
    disk = deployed["details"]["disks"][0]
    # The image in the real Glance, read back with Alice's own session.
    session = cloud.peers.session("alice")
    glance = cloud.peers.servers["glance"].url
    image = session.get(f"{glance}/v2/images/{disk['image_id']}").json()
    assert image["status"] == "active" and image["disk_format"] == "qcow2"
    data = session.get(f"{glance}/v2/images/{disk['image_id']}/file").content
    assert hashlib.md5(data, usedforsecurity=False).hexdigest() == image["checksum"] == disk["checksum"]
    downloaded = tmp_path / "from-glance.qcow2"
    downloaded.write_bytes(data)
    assert identical(src / "vm-os" / "disk-0.raw", downloaded), "the guest in Glance equals the source disk"
    # What Nova was asked for: the mapped flavor, network and security group, in Alice's project.
    created = next(c for c in cloud.nova.created if c["id"] == deployed["id"])
    assert created["project_id"] == cloud.peers.users["alice"].project_id
    server = created["body"]["server"]
    assert server["flavorRef"] == "2"  # m1.small
    assert server["networks"] == [{"uuid": "0b9c4a52-3b6a-4bd3-9b6e-1c9b9a000001"}]  # private
    assert server["security_groups"] == [{"name": "web"}]
    assert server["imageRef"] == disk["image_id"]
    events = [e["message"] for e in task(final, "vm-os", "DEPLOY_INSTANCE_RESOURCES")["events"]]
    assert any("Boot check" in e and "login:" in e for e in events), events


def test_barbican_secret_ref_completes_and_the_payload_appears_nowhere(keystone_stack: KeystoneStack) -> None:
    assert keystone_stack.cloud is not None
    from barbicanclient import client as barbican

    secret = "payload-" + uuid.uuid4().hex
    src, dst = inventories(keystone_stack, ["vm-b"], data_mib=8)
    bc = barbican.Client(session=keystone_stack.cloud.peers.session("alice"))
    ref = bc.secrets.create(name="lab", payload=json.dumps({"path": str(src), "password": secret}),
                            payload_content_type="text/plain").store()
    with keystone_stack.as_user("alice") as api:
        origin = api.create_endpoint("lab-secret", "local", {"secret_ref": ref})["id"]
        dest = api.create_endpoint("dst", "local", {"path": str(dst)})["id"]
        assert api.validate_endpoint(origin)["valid"] is True
        # The credentials are the subject here: no OS morphing (minutes of libguestfs under TCG).
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-b"],
                                 skip_os_morphing=True)
        final = wait_final(api, m["id"])
        responses = [api.http.get(p).text for p in ("/endpoints", f"/endpoints/{origin}", "/migrations",
                                                     "/migrations/detail", f"/migrations/{m['id']}")]
    assert final["last_execution_status"] == "COMPLETED", final
    assert identical(src / "vm-b" / "disk-0.raw", dst / "vm-b" / "disk-0.qcow2")
    assert ref in responses[1]  # the endpoint shows its reference...
    for text in responses:
        assert secret not in text and str(src) not in text  # ...never the payload
    # Every workflow the migration ran, whichever engine path ran it: Temporal lists them under the
    # migration's root (on transfers: the execution, its instance child, the deployment and its child).
    wid, address = f"migration-{m['id']}", keystone_stack.settings.temporal_address
    workflows = set(_tree(address, wid))
    assert wid in workflows and len(workflows) >= 2, workflows
    for wf in sorted(workflows):
        raw = temporal_cli(address, "workflow", "show", "-w", wf, "-o", "json")
        history = raw + "\n".join(_payloads(json.loads(raw)))
        assert m["id"] in history, wf  # payloads were decoded: the check below can fail
        assert secret not in history, wf
    for log in keystone_stack.stack.log_dir.glob("*.log"):
        assert secret not in log.read_text(errors="replace"), log


def test_a_secret_of_another_project_is_refused_clearly(keystone_stack: KeystoneStack) -> None:
    assert keystone_stack.cloud is not None
    from barbicanclient import client as barbican

    src, dst = inventories(keystone_stack, ["vm-c"], data_mib=8)
    bobs = barbican.Client(session=keystone_stack.cloud.peers.session("bob"))
    ref = bobs.secrets.create(name="bobs", payload=json.dumps({"path": str(src)}),
                              payload_content_type="text/plain").store()
    secret_id = ref.rsplit("/", 1)[-1]
    with keystone_stack.as_user("alice") as api:
        origin = api.create_endpoint("stolen", "local", {"secret_id": secret_id})["id"]
        dest = api.create_endpoint("dst", "local", {"path": str(dst)})["id"]
        check = api.validate_endpoint(origin)
        assert check["valid"] is False and "belongs to another project" in check["message"]
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-c"],
                                 skip_os_morphing=True)
        final = wait_final(api, m["id"])
    assert final["last_execution_status"] == "ERROR"
    error = task(final, "vm-c", "VALIDATE_MIGRATION_INPUTS")["exception_details"]
    assert f"Barbican secret {secret_id} belongs to another project" in error
    assert not (dst / "vm-c").exists()


def test_openstack_server_to_local_through_a_glance_snapshot(keystone_stack: KeystoneStack) -> None:
    """Source side: Nova createImage (fake compute, real Glance bytes), downloaded and migrated."""
    assert keystone_stack.cloud is not None
    cloud = keystone_stack.cloud
    seed, dst = inventories(keystone_stack, ["vm-src"], data_mib=8)
    disk = seed / "vm-src" / "disk-0.raw"
    server = cloud.nova.add_server(cloud.peers.users["alice"].project_id, "os-vm", disk)
    with keystone_stack.as_user("alice") as api:
        origin = api.create_endpoint("our-cloud-src", "openstack", {})["id"]
        assert "os-vm" in {i["name"] for i in api.list_instances(origin)}
        dest = api.create_endpoint("dst", "local", {"path": str(dst)})["id"]
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["os-vm"],
                                 skip_os_morphing=True)
        final = wait_final(api, m["id"])
    assert final["last_execution_status"] == "COMPLETED", [
        (t["task_type"], t["exception_details"]) for t in final["tasks"] if t["exception_details"]]
    assert identical(disk, dst / "os-vm" / "root.qcow2")
    # The snapshot image was removed by cleanup.
    session = cloud.peers.session("alice")
    images = session.get(f"{cloud.peers.servers['glance'].url}/v2/images").json()["images"]
    assert not [i for i in images if i["name"].startswith("sterna-snapshot-os-vm")]
    assert server.id in cloud.nova.servers  # the source server is untouched
