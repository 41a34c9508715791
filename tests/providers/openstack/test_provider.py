"""The openstack provider against real Keystone and Glance, and the fake compute API (see fake_nova)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from core.errors import AuthenticationFailed, IntegrityError, InvalidInput, TransferError
from core.models import Devices, DiskInfo, DiskLocator, InstanceInfo, NicInfo
from providers.base import ActionContext, TransferContext, TransferProgress
from providers.openstack import glance, importer
from providers.openstack.provider import OpenStackProvider
from tests.peers.openstack.fixtures import OpenStackCloud

pytestmark = pytest.mark.slow


def creds(cloud: OpenStackCloud, user: str = "alice", password: str | None = None) -> dict[str, Any]:
    u = cloud.peers.users[user]
    return {"auth_url": cloud.auth_url, "username": u.name, "password": password or u.password,
            "project_name": u.project_name, "user_domain_id": "default", "project_domain_id": "default"}


def qcow2(path: Path, data: bytes) -> Path:
    raw = path.with_suffix(".raw")
    raw.write_bytes(data + b"\0" * (4 * 1024 * 1024 - len(data)))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)], check=True)
    return path


def export_info(name: str) -> InstanceInfo:
    return InstanceInfo(id=f"src-{name}", name=name, num_cpu=1, memory_mb=1024,
                        devices=Devices(disks=[DiskInfo(id="disk-0", size_bytes=4 * 1024 * 1024)],
                                        nics=[NicInfo(network_name="VM Network", mac_address="00:11:22:33:44:55")]))


def upload(provider: OpenStackProvider, env: dict[str, Any], info: InstanceInfo, disk: Path, tmp: Path,
           action: ActionContext) -> Any:
    seen: list[TransferProgress] = []

    async def progress(p: TransferProgress) -> None:
        seen.append(p)

    ctx = TransferContext(workdir=tmp, progress=progress)
    loc = DiskLocator(disk_id="disk-0", size_bytes=4 * 1024 * 1024, format="qcow2", path=str(disk))
    imported = asyncio.run(provider.import_disk(env, info, loc, ctx, action))
    assert seen and seen[-1].bytes_done == disk.stat().st_size
    return imported


def test_validate_connection_and_bad_password(openstack: OpenStackCloud) -> None:
    OpenStackProvider(creds(openstack)).validate_connection()
    with pytest.raises(AuthenticationFailed):
        OpenStackProvider(creds(openstack, password="wrong")).validate_connection()
    with pytest.raises(InvalidInput, match="lacks"):
        OpenStackProvider({"auth_url": openstack.auth_url}).validate_connection()


def test_inventory_networks_and_options(openstack: OpenStackCloud) -> None:
    p = OpenStackProvider(creds(openstack))
    assert {n.name for n in p.list_networks({})} == {"private", "public"}
    options = {o.name: o.values for o in p.destination_options({})}
    assert "m1.small" in options["flavor_name"] and "web" in options["security_groups"]
    assert p.list_storage({}).config_default == "glance"


def test_upload_is_checksummed_and_the_server_gets_the_mapped_flavor_networks_and_groups(
        openstack: OpenStackCloud, tmp_path: Path) -> None:
    p = OpenStackProvider(creds(openstack))
    disk = qcow2(tmp_path / "disk-0.qcow2", os.urandom(1024 * 1024))
    info = export_info("vm-up")
    env = {"flavor_name": "m1.medium", "security_groups": ["web"]}
    action = ActionContext(action_id="m-up", network_map={"VM Network": "public"})
    p.validate_destination(env, info, action)
    imported = upload(p, env, info, disk, tmp_path, action)
    local_md5 = hashlib.md5(disk.read_bytes(), usedforsecurity=False).hexdigest()
    image = p.cloud.request("image", "GET", f"/v2/images/{imported.details['image_id']}")
    assert image["status"] == "active" and image["checksum"] == local_md5 == imported.details["checksum"]
    assert image["disk_format"] == "qcow2"
    # what Nova reads to boot it: virtio devices, and the guest's OS type
    assert (image["hw_disk_bus"], image["hw_vif_model"], image["os_type"]) == ("virtio", "virtio", "linux")
    deployed = p.deploy_instance(env, info, [imported], action)
    sent = next(c for c in openstack.nova.created if c["id"] == deployed.id)["body"]["server"]
    assert sent["flavorRef"] == "3"  # m1.medium
    assert sent["networks"] == [{"uuid": "0b9c4a52-3b6a-4bd3-9b6e-1c9b9a000002"}]  # public
    assert sent["security_groups"] == [{"name": "web"}]
    assert sent["imageRef"] == imported.details["image_id"]
    evidence = p.verify_boot(env, deployed, 30)
    assert any("login:" in line for line in evidence)
    assert any(local_md5 in line for line in p.cloud.request(
        "compute", "POST", f"/servers/{deployed.id}/action", json={"os-getConsoleOutput": {}})["output"].splitlines())
    # A sibling instance of the same migration fails (as after a crash: no ids, only its marks): nothing of
    # vm-up's goes with it.
    sibling = replace(action, source_name="vm-other")
    assert p.cleanup(env, "vm-other", [], None, succeeded=False, action=sibling) == []
    assert deployed.id in openstack.nova.servers
    # vm-up's own, found by its marks alone.
    removed = p.cleanup(env, "vm-up", [], None, succeeded=False, action=replace(action, source_name="vm-up"))
    assert any("server" in r for r in removed) and any("image" in r for r in removed)
    assert deployed.id not in openstack.nova.servers


def test_boot_from_volume_and_flavor_chosen_by_size(openstack: OpenStackCloud, tmp_path: Path) -> None:
    p = OpenStackProvider(creds(openstack))
    disk = qcow2(tmp_path / "disk-0.qcow2", b"bfv" * 1000)
    info = export_info("vm-bfv").model_copy(update={"num_cpu": 2, "memory_mb": 3000})
    env = {"boot_from_volume": True, "volume_size_gb": 3}
    action = ActionContext(action_id="m-bfv", network_map={"VM Network": "private"})
    imported = upload(p, env, info, disk, tmp_path, action)
    deployed = p.deploy_instance(env, info, [imported], action)
    sent = next(c for c in openstack.nova.created if c["id"] == deployed.id)["body"]["server"]
    assert sent["flavorRef"] == "3"  # the smallest with 2 vCPU and >= 3000 MiB
    assert "imageRef" not in sent
    assert sent["block_device_mapping_v2"] == [{
        "boot_index": 0, "uuid": imported.details["image_id"], "source_type": "image",
        "destination_type": "volume", "delete_on_termination": True, "volume_size": 3}]
    p.cleanup(env, "vm-bfv", [imported], deployed, succeeded=False, action=action)


def test_unknown_network_or_group_is_refused_before_anything_is_created(openstack: OpenStackCloud) -> None:
    p = OpenStackProvider(creds(openstack))
    with pytest.raises(InvalidInput, match="network"):
        p.validate_destination({}, export_info("vm-x"), ActionContext(network_map={"VM Network": "nope"}))
    with pytest.raises(InvalidInput, match="security group"):
        p.validate_destination({"security_groups": ["nope"]}, export_info("vm-x"),
                               ActionContext(network_map={"VM Network": "private"}))


def test_source_server_exports_through_a_glance_snapshot(openstack: OpenStackCloud, tmp_path: Path) -> None:
    p = OpenStackProvider(creds(openstack))
    seed = tmp_path / "seed.raw"
    seed.write_bytes(os.urandom(2 * 1024 * 1024))
    openstack.nova.add_server(openstack.peers.users["alice"].project_id, "src-vm", seed)
    info = p.get_instance({}, "src-vm")
    assert info.num_cpu == 1 and info.memory_mb == 2048 and info.devices.nics[0].network_name == "private"
    snap = p.snapshot_instance({}, "src-vm", tmp_path / "work")
    assert Path(snap.disks[0].path or "").read_bytes() == seed.read_bytes()
    src = p.open_disk(snap, snap.disks[0])
    try:
        assert src.size == seed.stat().st_size and src.read(0, 4096) == seed.read_bytes()[:4096]
    finally:
        src.close()
    p.delete_snapshot(snap)
    images = p.cloud.request("image", "GET", "/v2/images")["images"]
    assert snap.snapshot_id not in {i["id"] for i in images}
    # Bob's project does not see Alice's server.
    assert "src-vm" not in {i.name for i in OpenStackProvider(creds(openstack, "bob")).list_instances({})}


def test_a_template_is_an_image_exported_as_it_is(openstack: OpenStackCloud, tmp_path: Path) -> None:
    p = OpenStackProvider(creds(openstack))
    data = os.urandom(1024 * 1024)
    image = p.cloud.request("image", "POST", "/v2/images", json={
        "name": "golden-template", "disk_format": "raw", "container_format": "bare"})
    token = p.cloud.token()
    import httpx

    httpx.put(f"{p.cloud.endpoint('image')}/v2/images/{image['id']}/file", content=data,
              headers={"X-Auth-Token": token, "Content-Type": "application/octet-stream"}).raise_for_status()
    info = p.get_instance({}, "golden-template")
    assert info.id == image["id"] and info.power_state == "template"
    snap = p.snapshot_instance({}, "golden-template", tmp_path / "work")
    assert snap.snapshot_id == image["id"]
    assert Path(snap.disks[0].path or "").read_bytes() == data
    p.delete_snapshot(snap)  # the template itself is not ours to delete
    assert p.cloud.request("image", "GET", f"/v2/images/{image['id']}")["status"] == "active"
    p.cloud.request("image", "DELETE", f"/v2/images/{image['id']}")


def put_image(p: OpenStackProvider, name: str, data: bytes) -> dict[str, Any]:
    import httpx

    image: dict[str, Any] = p.cloud.request("image", "POST", "/v2/images", json={
        "name": name, "disk_format": "raw", "container_format": "bare"})
    httpx.put(f"{p.cloud.endpoint('image')}/v2/images/{image['id']}/file", content=data,
              headers={"X-Auth-Token": p.cloud.token(), "Content-Type": "application/octet-stream"},
              timeout=60).raise_for_status()
    return image


def test_a_download_resumes_from_its_checkpoint_and_glance_checksums_judge_the_result(
        openstack: OpenStackCloud, tmp_path: Path) -> None:
    p = OpenStackProvider(creds(openstack))
    data = os.urandom(2 * glance.CHUNK + 4096)
    image = put_image(p, "resume-template", data)
    work = tmp_path / "work"
    snap_dir = work / "snapshot"
    snap_dir.mkdir(parents=True)
    partial, done = snap_dir / "root.raw.partial", snap_dir / "root.raw.done.json"
    try:
        # An earlier attempt on this host stopped after the first chunk, whose bytes were then damaged:
        # the resumed download does not fetch that chunk again, and Glance's checksum catches it.
        partial.write_bytes(b"\xff" * glance.CHUNK)
        done.write_text(json.dumps([[0, glance.CHUNK]]))
        with pytest.raises(IntegrityError, match=image["id"]):
            p.snapshot_instance({}, "resume-template", work)
        assert not partial.exists() and not done.exists()
        # The same checkpoint over sound bytes: the rest is downloaded and the image is whole.
        partial.write_bytes(data[:glance.CHUNK])
        done.write_text(json.dumps([[0, glance.CHUNK]]))
        snap = p.snapshot_instance({}, "resume-template", work)
        assert Path(snap.disks[0].path or "").read_bytes() == data
        assert not partial.exists() and not done.exists()
    finally:
        p.cloud.request("image", "DELETE", f"/v2/images/{image['id']}")


def _downloaded(checkpoint: Path) -> int:
    """Bytes a download's checkpoint says are done (0 while it is absent or being rewritten)."""
    try:
        return sum(b - a for a, b in json.loads(checkpoint.read_text()))
    except (OSError, ValueError):
        return 0


def test_a_stopped_download_ends_at_once_and_the_retry_resumes_it(openstack: OpenStackCloud, tmp_path: Path) -> None:
    # 8 chunks at 1 MiB/s would take a minute: the step's stop signal must end the download at the next
    # chunk, with its partial file and checkpoint kept for the retry, which then finishes the image whole.
    p = OpenStackProvider(creds(openstack))
    data = os.urandom(8 * glance.CHUNK)
    image = put_image(p, "stopped-template", data)
    work = tmp_path / "work"
    done = work / "snapshot" / "root.raw.done.json"
    action = ActionContext(action_id="m-stop", instance="stopped-template")
    env = {"bandwidth_limit": 1024 * 1024}
    try:
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(p.snapshot_instance, env, "stopped-template", work, action)
            while _downloaded(done) == 0 and not running.done():
                time.sleep(0.1)
            action.stop.set()
            with pytest.raises(TransferError, match="stopped"):
                running.result(timeout=30)
        assert 0 < _downloaded(done) < len(data)
        snap = p.snapshot_instance({}, "stopped-template", work)
        assert Path(snap.disks[0].path or "").read_bytes() == data
    finally:
        p.cloud.request("image", "DELETE", f"/v2/images/{image['id']}")


def test_waiting_for_an_image_heartbeats_and_a_cancel_stops_the_poll(openstack: OpenStackCloud,
                                                                     tmp_path: Path) -> None:
    # A queued image (no data) never becomes active: the wait must keep heartbeating the finished upload,
    # and a cancel (which arrives through a heartbeat) must end the poll, not leave it running for minutes.
    p = OpenStackProvider(creds(openstack))
    image = p.cloud.request("image", "POST", "/v2/images", json={
        "name": "never-active", "disk_format": "raw", "container_format": "bare"})
    sent = TransferProgress(4096, 4096, [(0, 4096)])
    beats: list[TransferProgress] = []

    async def progress(beat: TransferProgress) -> None:
        beats.append(beat)
        if len(beats) == 2:
            raise asyncio.CancelledError

    async def wait() -> None:
        # A poll left running would end only after ACTIVE_TIMEOUT (600 s): this bound turns it into a
        # TimeoutError. asyncio.run returns once the poll's thread has ended (it shuts the executor down).
        await asyncio.wait_for(importer.wait_active(p.cloud, image["id"], TransferContext(tmp_path, progress), sent),
                               60)

    try:
        with pytest.raises(asyncio.CancelledError):
            asyncio.run(wait())
    finally:
        p.cloud.request("image", "DELETE", f"/v2/images/{image['id']}")
    assert beats == [sent, sent]
