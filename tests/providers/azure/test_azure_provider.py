"""The Azure provider in-process against Azurite and the fake ARM (operations complete at once
here; the REST API tests in ``tests/api/test_azure_migration.py`` poll them as ARM does)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from core.models import DiskLocator, InstanceInfo, NicInfo
from devstack.sample import build_disk
from providers.azure.provider import AzureProvider
from providers.base import ActionContext, TransferContext, TransferProgress
from tests.peers.azure.fixtures import AzureCloud

MIB = 1024 * 1024


@pytest.fixture
def cloud(azure_cloud: AzureCloud) -> Any:
    azure_cloud.arm.long_running = False
    yield azure_cloud
    azure_cloud.arm.long_running = True


def _vhd(tmp_path: Path, seed: int = 3) -> tuple[Path, Path]:
    raw = tmp_path / "disk.raw"
    build_disk(raw, size=64 * MIB, data_mib=3, seed=seed)
    vhd = tmp_path / "disk.vpc"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on",
                    str(raw), str(vhd)], check=True)
    return raw, vhd


def _info(cloud: AzureCloud) -> InstanceInfo:
    return InstanceInfo(id="vm-z", name="vm-z", num_cpu=1, memory_mb=1024,
                        devices={"nics": [NicInfo(network_name="VM Network", mac_address="00:11:22:33:44:55")]})


def _ctx(tmp_path: Path, stop_after: int | None = None) -> TransferContext:
    calls = {"n": 0}

    async def progress(_p: TransferProgress) -> None:
        calls["n"] += 1
        if stop_after is not None and calls["n"] > stop_after:
            raise asyncio.CancelledError

    return TransferContext(workdir=tmp_path, progress=progress, bandwidth_limit=4 * MIB if stop_after else None)


def test_cancel_mid_upload_revokes_the_sas_and_cleanup_removes_the_disk(cloud: AzureCloud, tmp_path: Path) -> None:
    _raw, vhd = _vhd(tmp_path)
    provider = AzureProvider(cloud.conn)
    env: dict[str, Any] = {}
    action = ActionContext(action_id="mig-cancel", network_map={"default": cloud.subnet_id},
                           source_name=_info(cloud).name)
    disk = DiskLocator(disk_id="disk-0", size_bytes=vhd.stat().st_size, format="vpc", path=str(vhd))
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(provider.import_disk(env, _info(cloud), disk, _ctx(tmp_path, stop_after=1), action))
    [made] = cloud.arm.of_type("Microsoft.Compute/disks")
    assert made["properties"]["diskState"] != "ActiveUpload" and cloud.arm.sas_granted() == []
    lines = provider.cleanup(env, "vm-z", [], None, succeeded=False, action=action)
    assert cloud.arm.of_type("Microsoft.Compute/disks") == [], lines
    assert any("deleted managed disk" in line for line in lines)


def test_cleanup_revokes_a_sas_left_granted_even_on_success(cloud: AzureCloud) -> None:
    """A worker killed between grant and revoke leaves a SAS; cleanup finds the disk by its tags. A sibling
    instance's disk of the same migration, whose upload may be under way, keeps its SAS."""
    provider = AzureProvider(cloud.conn)
    clients = provider.clients()
    for disk, source in (("left-disk", "vm"), ("sibling-disk", "vm-2")):
        body = {"location": cloud.conn["location"],
                "tags": {"sterna-migration-id": "mig-left", "sterna-role": "disk", "sterna-source-instance": source},
                "properties": {"creationData": {"createOption": "Upload", "uploadSizeBytes": 32 * MIB + 512}}}
        clients.compute.disks.begin_create_or_update(clients.rg, disk, body).result()
        clients.compute.disks.begin_grant_access(clients.rg, disk, {"access": "Write",
                                                                    "durationInSeconds": 600}).result()
    assert len(cloud.arm.sas_granted()) == 2
    lines = provider.cleanup({}, "vm", [], None, succeeded=True,
                             action=ActionContext(action_id="mig-left", source_name="vm"))
    assert "revoked the SAS of managed disk left-disk" in lines
    assert [sas.split("/")[-1] for sas in cloud.arm.sas_granted()] == ["sibling-disk"], cloud.arm.sas_granted()
    assert len(cloud.arm.of_type("Microsoft.Compute/disks")) == 2, "a succeeded migration keeps its disks"


def test_put_page_calls_are_at_most_4_mib_and_skip_zero_ranges(cloud: AzureCloud) -> None:
    from providers.azure.importer import grant
    from providers.azure.pageblob import MAX_PUT_PAGE, PageBlobTarget

    provider = AzureProvider(cloud.conn)
    clients = provider.clients()
    body = {"location": cloud.conn["location"], "properties": {
        "creationData": {"createOption": "Upload", "uploadSizeBytes": 16 * MIB + 512}}}
    clients.compute.disks.begin_create_or_update(clients.rg, "pages", body).result()
    target = PageBlobTarget(grant(clients, "pages", "Write"), 16 * MIB + 512)
    data = bytearray(b"\x5a" * (12 * MIB))
    data[5 * MIB : 8 * MIB] = bytes(3 * MIB)  # a hole inside one write
    target.write(0, bytes(data))
    # 0-5 MiB: two calls (4 + 1 MiB); 8-12 MiB: one call; the 3 MiB of zeros: none.
    assert (target.pages_put, target.bytes_sent) == (3, 9 * MIB)
    ranges = [(r["start"], r["end"] + 1) for r in target._client.get_page_ranges()[0]]
    assert sum(e - s for s, e in ranges) == 9 * MIB and all(not (s < 8 * MIB and e > 5 * MIB) for s, e in ranges)
    assert target.read(4 * MIB, MIB) == data[4 * MIB : 5 * MIB] and target.read(6 * MIB, 16) == bytes(16)
    assert MAX_PUT_PAGE == 4 * MIB


def test_a_retry_after_a_crash_mid_upload_starts_over_and_ends_identical(cloud: AzureCloud, tmp_path: Path) -> None:
    """The crashed attempt left its disk ActiveUpload with a SAS nobody holds; the retry seals and
    deletes it, uploads into a new disk, and revokes at the end."""
    from providers.azure.importer import disk_name, grant

    raw, vhd = _vhd(tmp_path, seed=4)
    provider = AzureProvider(cloud.conn)
    clients = provider.clients()
    env: dict[str, Any] = {}
    action = ActionContext(action_id="mig-crash")
    name = disk_name(action, _info(cloud), "disk-0")
    body = {"location": cloud.conn["location"], "tags": {"sterna-migration-id": "mig-crash"},
            "properties": {"creationData": {"createOption": "Upload", "uploadSizeBytes": vhd.stat().st_size}}}
    clients.compute.disks.begin_create_or_update(clients.rg, name, body).result()
    grant(clients, name, "Write")
    events: list[str] = []
    ctx = _ctx(tmp_path)
    ctx.event = events.append
    disk = DiskLocator(disk_id="disk-0", size_bytes=vhd.stat().st_size, format="vpc", path=str(vhd))
    imported = asyncio.run(provider.import_disk(env, _info(cloud), disk, ctx, action))
    assert any("left ActiveUpload by an earlier attempt" in e for e in events), events
    assert cloud.arm.sas_granted() == []
    made = cloud.arm.get(imported.details["managed_disk_id"])
    assert made is not None and made["properties"]["diskState"] == "Unattached"
    data = cloud.arm.blob(made).download_blob(offset=0, length=64 * MIB).readall()
    assert data == raw.read_bytes()


def test_validate_connection_names_the_cause_without_the_secret(cloud: AzureCloud) -> None:
    from core.errors import AuthenticationFailed, InvalidInput
    from tests.peers.azure.fixtures import SUBSCRIPTION, TENANT

    AzureProvider(cloud.conn).validate_connection()
    other = "00000000-0000-4000-8000-0000000000ff"
    cloud.arm.add_principal(TENANT, "no-role-app", "no-role-secret-1", other, role=False)
    cloud.arm.add_principal(TENANT, "roleless-here", "roleless-secret-2", SUBSCRIPTION, role=False)
    cases = [
        ({"client_secret": "wrong-secret-value"}, AuthenticationFailed, "client secret is wrong"),
        ({"client_id": "no-such-app"}, AuthenticationFailed, "no application with this client id"),
        ({"subscription_id": "00000000-0000-4000-8000-00000000dead"}, InvalidInput, "subscription"),
        ({"client_id": "roleless-here", "client_secret": "roleless-secret-2"}, AuthenticationFailed, "no role"),
        ({"resource_group": "no-such-rg"}, InvalidInput, "no-such-rg"),
    ]
    for change, error, needle in cases:
        info = {**cloud.conn, **change}
        with pytest.raises(error) as caught:
            AzureProvider(info).validate_connection()
        message = caught.value.message
        assert needle in message, (change, message)
        assert info["client_secret"] not in message and "Traceback" not in message


def test_source_reads_ahead_within_allocated_ranges_only(cloud: AzureCloud) -> None:
    """64 KiB chunk reads (a replica sync's) cost one GET per 4 MiB of an allocated range; holes are
    never fetched, and what comes back is the blob's bytes."""
    from providers.azure.importer import grant, revoke
    from providers.azure.pageblob import PageBlobSource, PageBlobTarget

    provider = AzureProvider(cloud.conn)
    clients = provider.clients()
    body = {"location": cloud.conn["location"], "properties": {
        "creationData": {"createOption": "Upload", "uploadSizeBytes": 32 * MIB + 512}}}
    clients.compute.disks.begin_create_or_update(clients.rg, "ahead", body).result()
    data = {0: random_bytes(6 * MIB, 1), 20 * MIB: random_bytes(MIB, 2)}  # 6 MiB, a hole, 1 MiB
    writer = PageBlobTarget(grant(clients, "ahead", "Write"), 32 * MIB + 512)
    for off, piece in data.items():
        writer.write(off, piece)
    revoke(clients, "ahead")
    source = PageBlobSource(grant(clients, "ahead", "Read"), 32 * MIB)
    try:
        chunk = 64 * 1024
        allocated = source.extents()
        got = {e.offset: b"".join(source.read(o, chunk) for o in range(e.offset, e.end, chunk)) for e in allocated}
        assert got == data
        assert source.gets == 3, "6 MiB in two windows (4 + 2 MiB), 1 MiB in one"
        assert source.bytes_fetched == 7 * MIB, "nothing beyond the allocated ranges"
        assert source.read(10 * MIB, chunk) == bytes(chunk) and source.bytes_fetched == 7 * MIB + chunk
    finally:
        revoke(clients, "ahead")


def random_bytes(n: int, seed: int) -> bytes:
    import random

    return random.Random(seed).randbytes(n)


def test_a_kept_sas_that_no_longer_grants_access_makes_the_upload_start_over(cloud: AzureCloud,
                                                                             tmp_path: Path) -> None:
    """A killed attempt kept its SAS in scratch and left the disk ActiveUpload, but the SAS is refused
    now (expired, as a tampered signature is refused): the retry can't resume, and starts over."""
    from providers.azure.importer import _keep_sas, _sas_file, disk_name, grant

    raw, vhd = _vhd(tmp_path, seed=5)
    provider = AzureProvider(cloud.conn)
    clients = provider.clients()
    action = ActionContext(action_id="mig-stale")
    name = disk_name(action, _info(cloud), "disk-0")
    body = {"location": cloud.conn["location"], "tags": {"sterna-migration-id": "mig-stale"},
            "properties": {"creationData": {"createOption": "Upload", "uploadSizeBytes": vhd.stat().st_size}}}
    clients.compute.disks.begin_create_or_update(clients.rg, name, body).result()
    ctx = _ctx(tmp_path)
    ctx.checkpoint = [(0, 4 * MIB)]
    granted = grant(clients, name, "Write")
    _keep_sas(_sas_file(ctx, name), granted.replace("sig=", "sig=0000"))
    events: list[str] = []
    ctx.event = events.append
    disk = DiskLocator(disk_id="disk-0", size_bytes=vhd.stat().st_size, format="vpc", path=str(vhd))
    imported = asyncio.run(provider.import_disk({}, _info(cloud), disk, ctx, action))
    assert not any("resuming" in e for e in events), events
    assert any("left ActiveUpload by an earlier attempt" in e for e in events), events
    made = cloud.arm.get(imported.details["managed_disk_id"])
    assert made is not None and cloud.arm.sas_granted() == []
    assert cloud.arm.blob(made).download_blob(offset=0, length=64 * MIB).readall() == raw.read_bytes()
    assert not _sas_file(ctx, name).exists()
