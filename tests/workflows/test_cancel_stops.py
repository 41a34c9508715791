"""Issue 11, reproducers 6-9: a cancel stops what runs, at any step, and leaves nothing in scratch."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.conftest import RunningStack, task, wait_final, wait_for
from tests.helpers import endpoints, identical, inventories, start_slow_migration
from tests.leftovers import pending_in_migration

pytestmark = pytest.mark.slow

MiB = 1024 * 1024


def _processes_naming(text: str) -> list[int]:
    """Pids of live processes whose command line holds ``text`` (a migration id is unique to a test)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def test_a_cancel_stops_a_capped_export_well_before_its_end(stack: RunningStack) -> None:
    # Reproducer 7: the copy ran to 100 % first, as the cancel came only with a (throttled) heartbeat.
    src, dst = inventories(stack, ["vm-a"], data_mib=24)
    with stack.client() as api:
        m = start_slow_migration(api, src, dst, limit_mib=1)
        api.cancel_migration(m["id"])
        final = wait_final(api, m["id"], timeout=120)
    assert final["last_execution_status"] == "CANCELED"
    export = task(final, "vm-a", "REPLICATE_DISKS")
    assert export["status"] == "CANCELED"
    done = max(p["current_step"] for p in export["progress_updates"])
    total = export["progress_updates"][-1]["total_steps"]
    # 24 MiB at 1 MiB/s: the copy was under way when the cancel came, and stopped in its first half.
    assert total >= 24 * MiB and 0 < done < total // 2, (done, total)
    assert any(e["message"] == "Cancellation requested: stopped" for e in export["events"]), export["events"]
    # Reproducer 8 as well: not even an empty folder of the migration is left in scratch.
    assert not (Path(stack.settings.scratch) / m["id"]).exists()
    assert not (dst / "vm-a").exists()


def test_a_cancel_stops_a_capped_replication_well_before_its_end(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a"], data_mib=24)
    with stack.client() as api:
        origin, dest = endpoints(api, src, dst)
        t = api.create_transfer(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
                                skip_os_morphing=True, destination_environment={"verify_boot": False},
                                source_environment={"bandwidth_limit": MiB})
        e = api.execute_transfer(t["id"])
        replica = dst / ".sterna-replicas" / t["id"] / "vm-a" / "disk-0.raw"
        wait_for(lambda: replica.exists() and replica.stat().st_blocks > 0, 60, 0.1, "replication under way")
        api.cancel_execution(t["id"], e["id"])
        final = api.wait_execution(t["id"], e["id"], 120)
    assert final["status"] == "CANCELED"
    # A full sync writes only the source's data into a sparse replica: what it holds is what was written.
    written = replica.stat().st_blocks * 512
    assert 0 < written < 12 * MiB, f"{written} of 24 MiB written: the sync ran on after the cancel"
    assert not (Path(stack.settings.scratch) / t["id"]).exists()


class SlowDisk:
    """A VM whose disk file is a FIFO fed slowly by a thread: the snapshot's ``cp`` lasts until we stop it."""

    def __init__(self, inventory: Path, name: str = "vm-a") -> None:
        vm_dir = inventory / name
        vm_dir.mkdir(parents=True)
        os.mkfifo(vm_dir / "disk-0.raw")
        self.path = vm_dir / "disk-0.raw"
        vm = {"name": name, "num_cpu": 1, "memory_mb": 1024, "firmware": "BIOS", "os_type": "linux",
              "nics": [{"network_name": "VM Network", "mac_address": "00:50:56:00:00:01"}],
              "disks": [{"id": "disk-0", "file": "disk-0.raw", "format": "raw", "size_bytes": 256 * MiB}]}
        (vm_dir / "vm.json").write_text(json.dumps(vm))
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._feed, daemon=True)
        self.thread.start()

    def _feed(self) -> None:
        # Opening blocks until the snapshot's cp opens the other end; a killed cp breaks the pipe.
        with suppress(OSError), open(self.path, "wb") as pipe:
            piece = os.urandom(256 * 1024)
            while not self.done.wait(0.05):
                pipe.write(piece)
                pipe.flush()

    def stop(self) -> None:
        self.done.set()
        # a writer still blocked in open() is released by a reader that closes at once
        with suppress(OSError):
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            os.close(fd)
        self.thread.join(30)


@contextmanager
def slow_disk(inventory: Path) -> Iterator[SlowDisk]:
    disk = SlowDisk(inventory)
    try:
        yield disk
    finally:
        disk.stop()


@pytest.mark.parametrize("force", [False, True], ids=["cancel", "force-cancel"])
def test_a_cancel_during_the_snapshot_leaves_no_snapshot_copy(stack: RunningStack, force: bool) -> None:
    # Reproducer 6: the workflow learnt the scratch folder only from the snapshot's result, and
    # force-cancel only once the copy had finished: the copy stayed in scratch, pointed at by nothing.
    src, dst = inventories(stack, [])
    with slow_disk(src), stack.client() as api:
        origin, dest = endpoints(api, src, dst)
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"])
        scratch = Path(stack.settings.scratch) / m["id"]
        partial = scratch / "vm-a" / "snapshot" / "disk-0.raw.partial"
        wait_for(lambda: partial.exists() and partial.stat().st_size > 0, 60, 0.1, "the snapshot copy under way")
        api.cancel_migration(m["id"], force=force)
        final = wait_final(api, m["id"], timeout=60)
        assert final["last_execution_status"] == "CANCELED"
        expected = "FORCE_CANCELED" if force else "CANCELED"
        assert task(final, "vm-a", "CREATE_SOURCE_SNAPSHOT")["status"] == expected
        # A force-cancel's cleanup runs in its own workflow, after the API has answered.
        wait_for(lambda: task(api.get_migration(m["id"]), "vm-a", "CLEANUP_MIGRATION_RESOURCES")["status"]
                 in ("COMPLETED", "ERROR"), 60, 0.2, "cleanup")
        wait_for(lambda: not scratch.exists(), 30, 0.2, f"{scratch} removed")
        wait_for(lambda: not _processes_naming(m["id"]), 30, 0.2, "the snapshot's cp gone")
        assert task(api.get_migration(m["id"]), "vm-a", "CLEANUP_MIGRATION_RESOURCES")["status"] == "COMPLETED"


def _copy_attempt(stack: RunningStack, migration_id: str) -> int:
    """The attempt of the migration's pending disk copy (the one-shot export, or the replication on transfers)."""
    return max((attempt for _, name, attempt in pending_in_migration(stack, migration_id)
                if name in ("export_disk", "replicate_disk")), default=0)


def test_a_timed_out_attempt_stops_instead_of_copying_on(stack: RunningStack) -> None:
    # Reproducer 9: an attempt that Temporal had given up on kept running inside the worker, holding
    # one of the host's disk slots. Here the worker is frozen past the heartbeat timeout mid-export.
    src, dst = inventories(stack, ["vm-a"], data_mib=16)
    worker = stack.stack.procs["worker"]
    with stack.client() as api:
        m = start_slow_migration(api, src, dst, limit_mib=2)
        worker.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: _copy_attempt(stack, m["id"]) >= 2, 60, 0.5,
                     "Temporal to time the frozen attempt out and schedule the next")
        finally:
            worker.send_signal(signal.SIGCONT)
        final = wait_final(api, m["id"], timeout=180)
    assert final["last_execution_status"] == "COMPLETED", final["tasks"]
    export = task(final, "vm-a", "REPLICATE_DISKS")
    messages = [e["message"] for e in export["events"]]
    # The first attempt learnt at its next heartbeat that it was over, and ended (its disk slot with it).
    assert any(msg.startswith("Temporal no longer runs this attempt") for msg in messages), messages
    assert any(msg.startswith("Attempt 2") for msg in messages), messages
    assert identical(src / "vm-a" / "disk-0.raw", dst / "vm-a" / "disk-0.qcow2")
