"""The suite's end-to-end migrations of the bootable Debian test guest, all started at once.

Each of them costs minutes of single-threaded QEMU TCG: OS morphing rebuilds the initramfs inside the
libguestfs appliance, and every boot check is a TCG boot. One after the other they took about 19 min
of the suite on a 2-core machine, with one core idle most of that time. ``guest_runs`` starts all of
them when the first of their tests asks, so the machine's cores share the work; each test then waits
for its own migration and asserts exactly what it asserted when it started its own.

What runs:
* ``aws``: the cloud-init guest as a VMware export -> AWS (moto), morphed for AWS;
* ``kvm_by_device``: the plain guest, its marker service removed, in its variant that mounts its root
  as /dev/sda2 -> local, unmorphed, boot-checked (it fails in the initramfs);
* ``vsphere``: the plain guest on a simulator VM -> local, unmorphed, boot-checked;
* ``kvm_nic_skipped``: the marker-less guest -> local, morphed but for its network
  (``skip_os_morphing_network``), boot-checked: its NIC config still names ``ens192``;
* ``azure`` / ``gcp``: the cloud-init guest, as for ``aws``, -> Azure (Azurite and the ARM fake) and
  -> GCP (the GCS emulator and the GCE fake), morphed for each (``tests/api/cloud_guest_runs.py``);
* ``deployments``: the marker-less guest as a transfer -> local, executed, then deployed twice from its
  replica: with OS morphing (boot-checked with DHCP), then, that instance torn down, without
  (boot-checked). A chain: each step needs the one before it, so it runs in a thread of its own.
  These are the suite's morphed and unmorphed kvm boots of that guest: ``test_morphing_migration.py``
  and ``test_deployment_boot.py`` both inspect them. Two migrations (``kvm_morphed``, ``kvm_plain``)
  once made the same two boots of the same disk through ``/migrations``, which since issue 13 runs a
  transfer's execution and then this same deployment workflow: one morph and two TCG boots, some
  200 CPU-s, paid twice for one result.

``STERNA_GUEST_RUNS=kvm_nic_skipped,deployments`` (names as above, comma-separated) starts only those
runs, for a developer who needs one of them and not the minutes of the others; unset, all of them
start. A test whose run was not started fails and says so. Cloud runs alone (``azure,gcp``) need
neither the simulator nor the foreign variants: run them with ``-n 1``, as ``tests/conftest.py``
otherwise starts the background guest builds for any TCG test.

The moto account and the simulator here are this fixture's own: the per-test ``conn_info`` fixture
resets moto, and the simulator fixtures are per module, either of which would pull the ground from
under a migration that runs across several tests.
"""

# mypy: allow-untyped-calls
# (pyVim helpers have untyped signatures)

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import xxhash
from pyVim.connect import Disconnect

from devstack.sample import create_vmware_vm
from tests.api.cloud_guest_runs import CLOUD_RUNS, CloudAccounts, cloud_init_source, start_cloud_runs
from tests.conftest import SLOW_POLL, RunningStack, wait_final
from tests.guests.debian import exports
from tests.peers.moto import REGION, _client, inherit_parent_blocks
from tests.peers.vcsim import vcsim
from tests.peers.vcsim.arrange import admin_session, find_vm, snapshot_count, stage_disk

#: how long a test waits for its migration; they share two cores with three others
TIMEOUT = 2700
#: the boot checks' own limit: a TCG boot takes 1-2 min alone, and here up to four share two cores
BOOT_TIMEOUT = 1500
# The grace is the provider's default, spelled out: a transfer update merges its environment key by key
# (as Coriolis's does), so the deployment chain's second check must override its first one's 600 s.
BOOT_CHECKED = {"verify_boot": True, "boot_timeout": BOOT_TIMEOUT, "boot_network_grace": 120}
VSPHERE_VM = "DC0_H0_VM1"
RUNS = ("aws", *CLOUD_RUNS, "kvm_by_device", "kvm_nic_skipped", "deployments", "vsphere")


def selected_runs() -> set[str]:
    """The runs ``STERNA_GUEST_RUNS`` names (all when unset); an unknown name fails the fixture."""
    chosen = {n.strip() for n in os.environ.get("STERNA_GUEST_RUNS", "").split(",") if n.strip()}
    if chosen - set(RUNS):
        pytest.fail(f"STERNA_GUEST_RUNS names unknown run(s) {sorted(chosen - set(RUNS))}; known: {RUNS}")
    return chosen or set(RUNS)


def _not_started(run: str) -> Future[DeployedTwice]:
    future: Future[DeployedTwice] = Future()
    future.set_exception(RuntimeError(f"guest run {run!r} was not started: STERNA_GUEST_RUNS="
                                      f"{os.environ.get('STERNA_GUEST_RUNS')!r}"))
    return future


@dataclass
class AwsAccount:
    """The moto account the AWS run uses, and the test's own clients to inspect it."""

    conn_info: dict[str, Any]
    subnet: dict[str, Any]
    ec2: Any = field(repr=False)
    ebs: Any = field(repr=False)


@dataclass
class GuestRuns:
    stack: RunningStack
    aws: AwsAccount
    #: migration ids by run name
    ids: dict[str, str]
    vsphere_snapshots: Any = field(repr=False)
    #: the ``deployments`` chain's outcome (see ``_deploy_twice``)
    deployments: Future[DeployedTwice] = field(repr=False)

    def wait(self, run: str) -> dict[str, Any]:
        if run not in self.ids:
            pytest.fail(f"guest run {run!r} was not started: STERNA_GUEST_RUNS="
                        f"{os.environ.get('STERNA_GUEST_RUNS')!r}")
        with self.stack.client() as api:
            return wait_final(api, self.ids[run], timeout=TIMEOUT)


@dataclass
class DeployedTwice:
    transfer: dict[str, Any]
    execution: dict[str, Any]
    #: the morphed deployment, then the unmorphed one
    first: dict[str, Any]
    second: dict[str, Any]
    #: digests of the replica disk before the first deployment, after it, and after the second
    replica_digests: list[str]


def _digest(path: Path) -> str:
    # XXH3-128, not SHA-256: the same proof of "unchanged", and 0.02 CPU-s per GiB against 0.6 (3 GiB, three times).
    with path.open("rb") as f:
        return hashlib.file_digest(f, xxhash.xxh3_128).hexdigest()


def _deploy_twice(stack: RunningStack, transfer_id: str, dst: Path) -> DeployedTwice:
    """Execute the transfer, deploy it with OS morphing, tear that down, deploy it again without."""
    with stack.client() as api:
        execution = api.wait_execution(transfer_id, api.execute_transfer(transfer_id)["id"], TIMEOUT, SLOW_POLL)
        if execution["status"] != "COMPLETED":
            return DeployedTwice(api.get_transfer(transfer_id), execution, {}, {}, [])
        replica = dst / ".sterna-replicas" / transfer_id / "debian-vm" / "disk-0.raw"
        digests = [_digest(replica)]
        morphed = api.create_deployment(transfer_id, skip_os_morphing=False)["id"]
        first = api.wait_deployment(morphed, TIMEOUT, SLOW_POLL)
        digests.append(_digest(replica))
        # A test failover torn down; then the real one, from the same replica.
        shutil.rmtree(dst / "debian-vm", ignore_errors=True)
        # An unmorphed guest never asks for an address: no long wait for a DHCP that never comes.
        api.update_transfer(transfer_id, destination_environment=BOOT_CHECKED)
        plain = api.create_deployment(transfer_id, skip_os_morphing=True)["id"]
        second = api.wait_deployment(plain, TIMEOUT, SLOW_POLL)
        digests.append(_digest(replica))
        return DeployedTwice(api.get_transfer(transfer_id), execution, first, second, digests)


def _aws_account(moto_url: str) -> AwsAccount:
    requests.post(f"{moto_url}/moto-api/reset", timeout=30).raise_for_status()
    conn_info = {"region": REGION, "access_key_id": "AKIDTESTTESTTEST",
                 "secret_access_key": "s3cr3t-test-value-never-shown", "endpoint_url": moto_url}
    ec2, ebs = _client(conn_info, "ec2"), _client(conn_info, "ebs")
    sub = sorted(ec2.describe_subnets()["Subnets"], key=lambda s: s["AvailabilityZone"])[0]
    group = ec2.create_security_group(GroupName="sterna-test", Description="test", VpcId=sub["VpcId"])
    return AwsAccount(conn_info, {**sub, "GroupId": group["GroupId"]}, ec2, ebs)


def _stage_vsphere(si: Any, vmdk: Path) -> Any:
    vm = find_vm(si, VSPHERE_VM)
    stage_disk(si, vm, vmdk)
    return vm


@pytest.fixture(scope="session")
def guest_runs(stack: RunningStack, moto_url: str,
               request: pytest.FixtureRequest, cloud_accounts: CloudAccounts) -> Iterator[GuestRuns]:
    if shutil.which("qemu-img") is None:
        pytest.fail("qemu-img (qemu-utils) is required: run make sysdeps")
    wanted, ids = selected_runs(), dict[str, str]()
    if wanted <= set(CLOUD_RUNS):
        with stack.client() as api:
            ids.update(start_cloud_runs(api, cloud_init_source(stack, api), cloud_accounts, wanted))
        yield GuestRuns(stack, None, ids, None, None)  # type: ignore[arg-type]  # only cloud runs to wait for
        return
    request.getfixturevalue("guest_builds")
    try:
        server = vcsim.start()
    except vcsim.VcsimUnavailable as exc:
        pytest.fail(f"the vSphere simulator could not be built or started: {exc}")
    si = admin_session(server)

    def start(api: Any, run: str, **fields: Any) -> None:
        if run in wanted:
            ids[run] = api.create_migration(**fields)["id"]

    # The AWS run's deployment starts its child snapshot minutes from now, before its test (and that
    # test's own ``ebs_inheritance``) may start on a fresh machine: the child must read whole from then on.
    inheritance = pytest.MonkeyPatch()
    if "aws" in wanted:
        inherit_parent_blocks(inheritance)
    try:
        aws = _aws_account(moto_url)
        with stack.client() as api:
            # The cloud-init variant first: it is the first one the background builds finish.
            cloud_src = stack.inventory("vmware-export-cloud-init")
            if wanted & {"aws", *CLOUD_RUNS}:  # a streamOptimized export only these runs read
                create_vmware_vm(cloud_src, "debian-vm", vmdk=exports("cloud-init")["disk"])
            a = api.create_endpoint("vmware-export-ci", "local", {"path": str(cloud_src)})
            b = api.create_endpoint("aws", "aws", aws.conn_info)
            start(api, "aws",
                origin_endpoint_id=a["id"], destination_endpoint_id=b["id"], instances=["debian-vm"],
                skip_os_morphing=False,
                destination_environment={"flavor_name": "t3.medium", "keep_image": True,
                                         "security_group_ids": [aws.subnet["GroupId"]]},
                network_map={"VM Network": aws.subnet["SubnetId"]},
            )
            ids.update(start_cloud_runs(api, a["id"], cloud_accounts, wanted))

            variants = exports("foreign")
            src, src_dev = stack.inventory("vmware-export"), stack.inventory("vmware-by-device")
            create_vmware_vm(src, "debian-vm", vmdk=variants["no-marker"])
            create_vmware_vm(src_dev, "debian-vm", vmdk=variants["root-by-device"])
            a = api.create_endpoint("vmware-export", "local", {"path": str(src)})
            a2 = api.create_endpoint("vmware-by-device", "local", {"path": str(src_dev)})
            d = api.create_endpoint("kvm-3", "local", {"path": str(stack.inventory("kvm-dev"))})
            start(api, "kvm_by_device",
                origin_endpoint_id=a2["id"], destination_endpoint_id=d["id"], instances=["debian-vm"],
                skip_os_morphing=True, destination_environment=BOOT_CHECKED)

            deploy_dst = stack.inventory("kvm-deployed")
            e = api.create_endpoint("kvm-4", "local", {"path": str(deploy_dst)})
            transfer = api.create_transfer(
                origin_endpoint_id=a["id"], destination_endpoint_id=e["id"], instances=["debian-vm"],
                network_map={"VM Network": "default"},
                # verify_boot forced: the unmorphed deployment has no morph to say the disk is bootable.
                # DHCP may come minutes after userspace while three other TCG jobs share the cores.
                destination_environment={"verify_boot": True, "boot_timeout": BOOT_TIMEOUT,
                                         "boot_network_grace": 600})
            chain = ThreadPoolExecutor(1, thread_name_prefix="deploy-twice")
            deployments = (chain.submit(_deploy_twice, stack, transfer["id"], deploy_dst)
                           if "deployments" in wanted else _not_started("deployments"))

            # Morphed but for its network: its NIC config still names ens192 (and its .link pins that name
            # to the VMware MAC), so it boots without network, and the check must say why (issue 15).
            f = api.create_endpoint("kvm-5", "local", {"path": str(stack.inventory("kvm-nic-skipped"))})
            start(api, "kvm_nic_skipped",
                  origin_endpoint_id=a["id"], destination_endpoint_id=f["id"], instances=["debian-vm"],
                  skip_os_morphing=False, network_map={"VM Network": "default"},
                  destination_environment={**BOOT_CHECKED, "skip_os_morphing_network": True})

            vm = _stage_vsphere(si, exports("vsphere")["disk"]) if "vsphere" in wanted else None
            vc = api.create_endpoint("vc-debian", "vmware_vsphere", {
                "host": server.host, "username": server.user, "password": server.password,
                "allow_untrusted": True})
            kvm = api.create_endpoint("kvm-debian", "local", {"path": str(stack.inventory("kvm-vsphere"))})
            start(api, "vsphere",
                origin_endpoint_id=vc["id"], destination_endpoint_id=kvm["id"], instances=[VSPHERE_VM],
                skip_os_morphing=True, destination_environment=BOOT_CHECKED)
        runs = GuestRuns(stack, aws, ids, lambda: snapshot_count(si, vm), deployments)
        yield runs
        # The simulator goes away with this fixture: let its migration end first, whatever its test did.
        if "vsphere" in ids:
            runs.wait("vsphere")
        if "deployments" in wanted:
            deployments.result(TIMEOUT)
        chain.shutdown()
    finally:
        inheritance.undo()
        Disconnect(si)
        server.stop()
