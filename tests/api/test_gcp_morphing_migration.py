"""The Debian test guest, as a VMware export, migrated to Google Cloud with OS morphing, through the REST API.

The guest (``devstack/guest.py`` with cloud-init) is adapted for GCE and streamed as ``disk.raw`` in a
sparse tar.gz into the GCS emulator, from which the GCE fake (``tests/peers/gce.py``) imports the image.
The test downloads the image's own source object, unpacks it and looks inside: gVNIC (``gve``) and
virtio-scsi are in the initrd and cloud-init reads the GCE datasource. Then it boots that disk under
QEMU with the local boot check, the disk on a virtio-scsi controller as GCE attaches persistent disks.

What the fakes can't show, and GCE would: the instance booting there, gVNIC as its NIC (QEMU has no gVNIC;
the boot here uses virtio-net, which GCE also offers) and the metadata server answering cloud-init.
Slow: a TCG morph (the initramfs rebuilt in the appliance) and a TCG boot.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from providers.local.boot import boot_check
from tests.api.cloud_guest_runs import CloudAccounts, timings
from tests.api.guest_runs import BOOT_TIMEOUT, GuestRuns
from tests.conftest import RunningStack
from tests.guests.inside import assert_morphed_for, look_inside
from tests.leftovers import deployments_of

pytestmark = [pytest.mark.slow, pytest.mark.tcg]
GCE_DRIVERS = {"gve", "virtio_scsi"}


def _download(gcs_url: str, bucket: str, name: str, out: Path) -> None:
    """The object's bytes from the emulator, streamed to ``out`` (the tarball is hundreds of MiB)."""
    with requests.get(f"{gcs_url}/storage/v1/b/{bucket}/o/{quote(name, safe='')}", params={"alt": "media"},
                      stream=True, timeout=120) as r:
        r.raise_for_status()
        with open(out, "wb") as f:
            for chunk in r.iter_content(8 * 1024 * 1024):
                f.write(chunk)


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_debian_guest_to_gcp_is_morphed_for_gce_and_still_boots(
        stack: RunningStack, guest_runs: GuestRuns, cloud_accounts: CloudAccounts, tmp_path: Path) -> None:
    """The migration runs with the suite's other guest migrations (``tests/api/guest_runs.py``)."""
    final = guest_runs.wait("gcp")
    assert final["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in final["tasks"]]
    print(f"gcp run: {timings(final)}")
    gcp = cloud_accounts.gcp
    proj = gcp.gce.projects[gcp.conn["project_id"]]
    # Labelled by the action that made them: the migration, or on transfers its deployment.
    actions = {final["id"], *deployments_of(stack, final)}
    [inst] = [i for i in proj.instances["us-central1-a"].values() if i["labels"]["sterna-migration-id"] in actions]
    [image] = [i for i in proj.images.values() if i["labels"]["sterna-migration-id"] in actions]
    assert proj.disks["us-central1-a"][inst["name"]]["sourceImage"].endswith(f"/images/{image['name']}")

    # The object GCE imported the image from, read back by the test and unpacked (sparse-aware).
    match = re.fullmatch(r"https://storage.googleapis.com/([^/]+)/(.+)", image["rawDisk"]["source"])
    assert match, image["rawDisk"]
    tarball = tmp_path / "disk.tar.gz"
    _download(gcp.gcs_url, match.group(1), match.group(2), tarball)
    subprocess.run(["tar", "-xSzf", str(tarball), "-C", str(tmp_path), "disk.raw"], check=True)
    disk = tmp_path / "disk.raw"
    print(f"gcp image source: {tarball.stat().st_size:,}-byte tar.gz, disk.raw {disk.stat().st_size:,} bytes")
    tarball.unlink()
    inside = look_inside(disk, "raw")
    assert_morphed_for(inside, GCE_DRIVERS, "GCE")

    # Userspace starts with the root on virtio-scsi, and DHCP configures the NIC, seen from the host
    # (the lease and the guest's use of the address).
    result = boot_check(str(disk), "raw", timeout=BOOT_TIMEOUT, workdir=tmp_path / "boot", network_grace=600,
                        disk_bus="virtio-scsi")
    assert result.outcome == "booted", (result.reason, result.stages, result.network)
    assert result.userspace_started and result.address, (result.reason, result.stages, result.network)
