"""``sterna demo``: the embedded stack migrating a real VM end to end.

By default the VM is the bootable VMware-style Debian guest (built once, cached): it is OS-morphed and
boot-checked, and the demo shows the morph's changes and the boot evidence. ``--quick`` migrates the small
sample disk without an OS instead, verified with ``qemu-img compare``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from client.sdk import SternaClient
from client.watch import watch
from core.settings import Settings
from devstack.guest import build_debian_guest, cached_debian_guest
from devstack.launcher import Stack, temporal_binary
from devstack.sample import create_vm, create_vmware_vm
from workflows import ids

PROJECT = "demo"


def _say(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


#: what the long steps of the bootable run cost on a 2-vCPU host without KVM (README's measurements)
ESTIMATE = (
    "  Expect about 10 minutes without KVM: OS morphing runs the guest's own update-initramfs in a\n"
    "  libguestfs appliance under TCG (about 4-8 minutes), then the boot check boots the migrated disk\n"
    "  under TCG until its console shows userspace and the host sees its DHCP lease (about 2-4 minutes).\n"
    "  The line under the bar names the current sub-step."
)


def _bootable_guest() -> Path | None:
    """The cached Debian guest, built first when missing; ``None`` (with the reason printed) when it cannot be."""
    cached = cached_debian_guest()
    if cached is not None:
        return cached
    _say("Building the bootable Debian guest, once (debootstrap from deb.debian.org, then GRUB in a\n"
         "    libguestfs appliance): about 4-7 minutes, then cached under ~/.cache/sterna/guests")
    if os.geteuid() != 0:
        print("building the guest needs root (debootstrap): run the demo as root, or `make demo ARGS=--quick`\n"
              "for the quick sample without an OS", file=sys.stderr)
        return None
    try:
        return build_debian_guest()
    except (OSError, RuntimeError) as exc:
        print(f"building the Debian guest failed: {exc}\n"
              "`make demo ARGS=--quick` runs the quick sample without an OS", file=sys.stderr)
        return None


def run_demo(settings: Settings, *, exit_after: bool, quick: bool = False) -> int:
    # Under inventories/: the only place local endpoints may live by default (STERNA_LOCAL_ROOTS).
    root = settings.data_dir / "inventories" / "demo"
    source, dest = root / "source", root / "destination"
    guest = None if quick else _bootable_guest()
    if not quick and guest is None:
        return 1
    shutil.rmtree(source, ignore_errors=True)
    if guest is not None:
        _say(f"Using the bootable VMware-style Debian guest ({guest}) as a streamOptimized VMDK in {source}")
        create_vmware_vm(source, "sample-vm", guest)
    else:
        _say(f"Building the quick sample VM in {source} (GPT, 2 GiB sparse, ext4 root from mkfs.ext4 -d)")
        print("  (--quick: this sample has no kernel, so OS morphing finds no OS to adapt and no boot is checked;\n"
              "   `sterna demo` without --quick migrates the bootable Debian guest)")
        create_vm(source, "sample-vm", data_mib=256)
    # The destination is the demo's own: start each run from an empty one.
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)

    _say("Starting the stack: Temporal dev server, worker, API")
    stack = Stack(settings)
    stack.start()
    url = f"http://127.0.0.1:{settings.api_port}"
    try:
        with SternaClient(url, PROJECT) as api:
            src = api.create_endpoint("demo-source", "local", {"path": str(source)}, "sample inventory")
            dst = api.create_endpoint("demo-destination", "local", {"path": str(dest)}, "KVM host")
            print(f"endpoints: {src['id']} (source), {dst['id']} (destination)")
            for ep in (src, dst):
                result = api.validate_endpoint(ep["id"])
                if not result["valid"]:
                    print(f"endpoint {ep['name']} is not valid: {result['message']}", file=sys.stderr)
                    return 1
            print("instances:", ", ".join(i["name"] for i in api.list_instances(src["id"])))
            _say("Migrating sample-vm through the REST API")
            if guest is not None:
                print(ESTIMATE)
            m = api.create_migration(
                origin_endpoint_id=src["id"], destination_endpoint_id=dst["id"], instances=["sample-vm"],
                destination_environment={"flavor_name": "m1.small"}, network_map={"VM Network": "default"},
                notes="sterna demo",
            )
            code = watch(api, m["id"])  # ends with the task table and each task's last event
            if code != 0:
                return 1
            if guest is None:
                _say("Verifying the migrated disk against the source")
                out = subprocess.run(
                    ["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(source / "sample-vm" / "disk-0.raw"),
                     str(dest / "sample-vm" / "disk-0.qcow2")], capture_output=True, text=True, check=False,
                )
                print(out.stdout.strip() or out.stderr.strip())
                if out.returncode != 0:
                    return 1
            else:
                # OS morphing changed the guest on purpose: the proof is the boot check, not equality.
                tasks = {t["task_type"]: t for t in api.get_migration(m["id"])["tasks"]}
                _say("What OS morphing changed in the guest (each change is one of the task's events)")
                for event in tasks["OS_MORPHING"]["events"]:
                    print(f"  {event['message']}")
                _say("The boot check of the migrated guest (QEMU, virtio disk and NIC, DHCP): its evidence")
                boot = tasks["DEPLOY_INSTANCE_RESOURCES"]
                for event in boot["events"]:
                    print(f"  {event['message']}")
                if not any(e["message"].startswith("Boot check: Booted") for e in boot["events"]):
                    return 1
            print(f"libvirt domain: {dest / 'sample-vm' / 'domain.xml'}")
            _say("Where to look")
            print(f"  REST API     {url}/v1/{PROJECT}/migrations/{m['id']}")
            print(f"  Temporal UI  http://127.0.0.1:{settings.temporal_ui_port}/namespaces/"
                  f"{settings.temporal_namespace}/workflows/{ids.migration(m['id'])}")
            print(f"  CLI          {temporal_binary()} workflow show -w {ids.migration(m['id'])} "
                  f"--address {settings.temporal_address}")
            print(f"               {temporal_binary()} workflow list --address {settings.temporal_address} "
                  f"--query \"ProjectId='{PROJECT}'\"")
            print(f"  Logs         {stack.log_dir}")
        if exit_after:
            return 0
        print("\nThe stack stays up; press Ctrl-C to stop it.", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            while (problem := stack.check()) is None:
                time.sleep(0.5)
            print(problem, file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
    finally:
        print("Stopping the stack...", flush=True)
        stack.stop()
