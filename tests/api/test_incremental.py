"""Incremental local -> local replication at scale, through the REST API on the real stack.

A 4 GiB sparse disk with 1 GiB of data executes fully; then 64 MiB change at scattered offsets and
the second execution writes at most 1.05x that into the replica. Raw sources compare chunk digests
(read everything, write what differs); qcow2 sources read only what their dirty bitmap marks.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from diskio import bitmaps
from tests.api.test_transfers import bytes_written, new_transfer, replica_of, task_of
from tests.conftest import RunningStack

pytestmark = pytest.mark.slow

MiB, GiB = 1024**2, 1024**3
SIZE, DATA, CHANGED, PIECE = 4 * GiB, 1 * GiB, 64 * MiB, 256 * 1024


@pytest.fixture(scope="module")
def big_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 GiB sparse raw, 1 GiB of data in 4 MiB runs at scattered offsets (built once).

    One random 4 MiB pattern, with each 64 KiB chunk stamped with its offset: every chunk differs
    (as digests must see it) without generating 1 GiB of random bytes.
    """
    path = tmp_path_factory.mktemp("incremental") / "big.raw"
    rng = random.Random(13)
    run, chunk = 4 * MiB, 64 * 1024
    pattern = bytearray(rng.randbytes(run))
    with path.open("wb") as f:
        f.truncate(SIZE)
        for slot in rng.sample(range(SIZE // run), DATA // run):
            for c in range(0, run, chunk):
                pattern[c:c + 8] = (slot * run + c).to_bytes(8, "little")
            f.seek(slot * run)
            f.write(pattern)
    return path


def source_vm(stack: RunningStack, big: Path, fmt: str) -> tuple[Path, Path, Path]:
    tag = random.randbytes(4).hex()
    src, dst = stack.inventory(f"big-src-{tag}"), stack.inventory(f"big-dst-{tag}")
    vm = src / "vm-a"
    vm.mkdir()
    disk = vm / f"disk-0.{fmt}"
    if fmt == "raw":
        subprocess.run(["cp", "--reflink=auto", "--sparse=always", str(big), str(disk)], check=True)
    else:
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, str(big), str(disk)], check=True)
    (vm / "vm.json").write_text(json.dumps({
        "name": "vm-a", "num_cpu": 1, "memory_mb": 512, "firmware": "BIOS", "os_type": "linux",
        "nics": [], "disks": [{"id": "disk-0", "file": disk.name, "format": fmt}]}))
    return src, dst, disk


def same(source: Path, fmt: str, replica: Path) -> bool:
    out = subprocess.run(["qemu-img", "compare", "-q", "-f", fmt, "-F", "raw", str(source), str(replica)],
                         capture_output=True, check=False)
    return out.returncode == 0


def scattered(seed: int) -> list[int]:
    """Offsets of 64 MiB in 256 KiB pieces anywhere on the disk, in data and in holes alike."""
    return [slot * PIECE for slot in random.Random(seed).sample(range(SIZE // PIECE), CHANGED // PIECE)]


def change_raw(disk: Path) -> None:
    rng = random.Random(5)
    with disk.open("r+b") as f:
        for offset in scattered(5):
            f.seek(offset)
            f.write(rng.randbytes(PIECE))


def change_qcow2(disk: Path) -> None:
    """Written through qemu, as a running guest would: the persistent bitmap records it."""
    cmds = [a for i, o in enumerate(scattered(6)) for a in ("-c", f"write -P 0x{i % 255 + 1:02x} {o} 256k")]
    subprocess.run(["qemu-io", "-f", "qcow2", *cmds, str(disk)], check=True, capture_output=True)


def events(execution: dict[str, Any]) -> list[str]:
    return [e["message"] for e in task_of(execution, "REPLICATE_DISKS")["events"]]


# ~30 s each: each format runs on one database backend only (the suite's time budget), which
# still puts the 1 MiB digest map and the change marker through both SQLite and PostgreSQL.
@pytest.mark.parametrize(("stack", "fmt"), [("sqlite", "raw"), ("postgresql", "qcow2")], indirect=["stack"])
def test_4gib_disk_second_execution_writes_only_the_changes(stack: RunningStack, big_disk: Path, fmt: str) -> None:
    src, dst, disk = source_vm(stack, big_disk, fmt)
    try:
        with stack.client() as api:
            t = new_transfer(api, src, dst)
            e1 = api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 600)
            assert e1["status"] == "COMPLETED", e1
            replica = replica_of(dst, t["id"])
            assert same(disk, fmt, replica)
            assert bytes_written(e1) >= DATA

            (change_raw if fmt == "raw" else change_qcow2)(disk)
            e2 = api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 600)
            assert e2["status"] == "COMPLETED", e2
            written = bytes_written(e2)
            print(f"\n{fmt} source, 4 GiB disk with 1 GiB of data: second execution wrote {written} bytes "
                  f"for {CHANGED} changed ({written / CHANGED:.3f}x)")
            assert written <= 1.05 * CHANGED
            assert same(disk, fmt, replica)
            done = next(m for m in events(e2) if m.startswith("Replica of"))
            if fmt == "qcow2":
                # The bitmap, not a full read: only the marked areas were read from the snapshot.
                assert "incremental, changed areas" in done, events(e2)
                read = int(done.split("read ")[1].split(" ")[0])
                assert read <= 1.05 * CHANGED, done
                info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(disk)], check=True,
                                                 capture_output=True, text=True).stdout)
                names = [b["name"] for b in info["format-specific"]["data"].get("bitmaps", [])]
                assert len([n for n in names if n.startswith(f"sterna-{t['id']}-")]) == 1, names
            else:
                assert "incremental, digests" in done, events(e2)
    finally:
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(dst, ignore_errors=True)


def small_qcow2_vm(stack: RunningStack) -> tuple[Path, Path, Path]:
    from tests.helpers import inventories

    src, dst = inventories(stack, ["vm-a"], data_mib=16)
    vm = src / "vm-a"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(vm / "disk-0.raw"),
                    str(vm / "disk-0.qcow2")], check=True)
    (vm / "disk-0.raw").unlink()
    meta = json.loads((vm / "vm.json").read_text())
    meta["disks"] = [{"id": "disk-0", "file": "disk-0.qcow2", "format": "qcow2"}]
    (vm / "vm.json").write_text(json.dumps(meta))
    return src, dst, vm / "disk-0.qcow2"


def guest_writes(disk: Path, seed: int) -> int:
    """16 MiB in 256 KiB pieces at scattered offsets of the 256 MiB disk, through qemu."""
    offsets = random.Random(seed).sample(range(256 * MiB // PIECE), 64)
    cmds = [a for i, o in enumerate(offsets) for a in ("-c", f"write -P 0x{i + 1:02x} {o * PIECE} 256k")]
    subprocess.run(["qemu-io", "-f", "qcow2", *cmds, str(disk)], check=True, capture_output=True)
    return 16 * MiB


@pytest.mark.parametrize("stack", ["postgresql"], indirect=True)
def test_cancelled_incremental_execution_is_never_trusted(stack: RunningStack) -> None:
    """A cancel in the middle of an incremental sync (qcow2 source, bitmap): CANCELED, the replica is
    marked untrusted, nothing is left behind, and the next execution re-syncs it to identical."""
    from tests.conftest import wait_for

    src, dst, disk = small_qcow2_vm(stack)
    with stack.client() as api:
        t = new_transfer(api, src, dst)
        assert api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)["status"] == "COMPLETED"
        replica = replica_of(dst, t["id"])
        guest_writes(disk, 8)

        # 2 MiB/s: the 16 MiB the bitmap marks take ~8 s to read, long enough to cancel in between.
        api.update_transfer(t["id"], source_environment={"bandwidth_limit": 2 * MiB})
        e = api.execute_transfer(t["id"])

        def reading() -> bool:
            task = task_of(api.get_execution(t["id"], e["id"]), "REPLICATE_DISKS")
            return task["status"] == "RUNNING" and any("changed since marker" in ev["message"]
                                                       for ev in task["events"])

        wait_for(reading, 120, 0.1, "the incremental sync under way")
        api.cancel_execution(t["id"], e["id"])
        final = api.wait_execution(t["id"], e["id"], 60)
        assert final["status"] == "CANCELED"
        assert task_of(final, "REPLICATE_DISKS")["status"] == "CANCELED"
        state = api.get_transfer(t["id"], include_task_info=True)["info"]["vm-a"]["volumes_info"][0]
        assert state["replica_state"]["trusted"] is False, "a cancelled sync is never trusted"
        assert not (Path(stack.settings.scratch) / t["id"] / "vm-a").exists(), "scratch and snapshot released"
        assert [p.name for p in replica.parent.iterdir()] == [replica.name], "no partial disk beside the replica"

        api.update_transfer(t["id"], source_environment={"bandwidth_limit": None})
        again = api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)
        assert again["status"] == "COMPLETED"
        assert any("Full sync" in m for m in events(again)), events(again)
        assert same(disk, "qcow2", replica)
        # The replica gone, the transfer's bitmap leaves the source too.
        assert any(n.startswith(f"sterna-{t['id']}-") for n in bitmaps.bitmaps(disk))
        api.delete_transfer_disks(t["id"])
        assert not replica.exists() and bitmaps.bitmaps(disk) == []


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_worker_killed_mid_incremental_sync_resumes_from_checkpoint(stack: RunningStack) -> None:
    """SIGKILL during an incremental (bitmap) sync: the retry resumes at its checkpoint, still reading
    only the changed areas, and the replica ends identical."""
    import re
    import signal

    from tests.conftest import wait_for

    src, dst, disk = small_qcow2_vm(stack)
    with stack.client() as api:
        t = new_transfer(api, src, dst)
        assert api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)["status"] == "COMPLETED"
        changed = guest_writes(disk, 9)
        api.update_transfer(t["id"], source_environment={"bandwidth_limit": 2 * MiB})
        e = api.execute_transfer(t["id"])

        def a_third_read() -> bool:
            task = task_of(api.get_execution(t["id"], e["id"]), "REPLICATE_DISKS")
            updates = task["progress_updates"]
            return bool(updates) and updates[-1]["current_step"] > (updates[-1]["total_steps"] or 0) // 3

        wait_for(a_third_read, 120, 0.1, "a third of the incremental sync")
        worker = stack.stack.procs["worker"]
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        stack.stack.restart("worker")
        final = api.wait_execution(t["id"], e["id"], 180)
    assert final["status"] == "COMPLETED", final
    msgs = events(final)
    assert any(m.startswith("Resuming the sync") for m in msgs), msgs
    done = next(m for m in msgs if m.startswith("Replica of"))
    assert "incremental, changed areas" in done, msgs
    read = int(re.search(r"read (\d+) bytes", done).group(1))  # type: ignore[union-attr]
    assert read < changed, f"the resumed attempt re-read all the changes ({read} bytes)"
    assert same(disk, "qcow2", replica_of(dst, t["id"]))
