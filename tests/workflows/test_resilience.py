"""Crashes lose nothing: a SIGKILLed worker resumes its export from the checkpoint; the API restarts."""

from __future__ import annotations

import re
import signal
from typing import Any

import pytest

from activities.steps import _pacing
from devstack.launcher import wait_port
from devstack.sample import create_vm
from tests.conftest import RunningStack, task, wait_final, wait_for
from tests.helpers import (
    default_heartbeat_timeout,
    endpoints,
    export_progress,
    identical,
    inventories,
    start_slow_migration,
)

pytestmark = pytest.mark.slow

#: A retried disk copy (the one-shot export, or the replication into a transfer's replica disk)
#: says where it resumes: "Resuming … from its checkpoint: X of Y bytes …"; its summary at the end
#: says what this attempt read from the source: "…: read N bytes …".
RESUMED = re.compile(r"^Resuming .* from its checkpoint: (\d+) of (\d+) bytes")
READ = re.compile(r": read (\d+) bytes")
MiB = 1024 * 1024


def _copy_events(migration: dict[str, Any]) -> tuple[list[int], int]:
    """(where each retried attempt of vm-a's disk copy resumed, the bytes the last attempt read)."""
    events = [e["message"] for e in task(migration, "vm-a", "REPLICATE_DISKS")["events"]]
    resumed = [int(m.group(1)) for e in events if (m := RESUMED.search(e))]
    reads = [int(m.group(1)) for e in events if (m := READ.search(e))]
    assert resumed and reads, events
    return resumed, reads[-1]


def test_worker_killed_mid_export_resumes_from_checkpoint(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a"], data_mib=48)
    with stack.client() as api:
        origin, dest = endpoints(api, src, dst)
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
                                 source_environment={"bandwidth_limit": 8 * 1024 * 1024})
        # Wait until the sync is well into the data, and kill it there. Its progress is its position in
        # the disk, and zero areas pass at once: the 48 MiB of data lie in the first quarter of the
        # 256 MiB disk (8-58 MiB), so a third of the disk was only ever seen in the instant before the
        # end, or not at all. 24 MiB in is some 2 s of the 8 MiB/s copy, with 4 s of data still ahead.
        done, total = wait_for(lambda: (p := export_progress(api.get_migration(m["id"])))[0] >= 24 * MiB and p,
                               60, 0.1, "the sync 24 MiB into the disk")
        assert done < total
        worker = stack.stack.procs["worker"]
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        stack.stack.restart("worker")
        final = wait_final(api, m["id"], timeout=180)
    assert final["last_execution_status"] == "COMPLETED", final["tasks"]
    resumed, read = _copy_events(final)
    assert resumed[0] > 0, "the retry started from byte 0"
    assert read < total, f"the resumed attempt re-read everything ({read} of {total})"
    assert identical(src / "vm-a" / "disk-0.raw", dst / "vm-a" / "disk-0.qcow2")


def test_worker_killed_at_90_percent_rereads_at_most_the_rest_plus_a_chunk_per_lane(stack: RunningStack) -> None:
    """Issue 11: at the default 30 s heartbeat timeout the SDK sends heartbeat details every 24 s, so after
    a kill the server held only the copy's first checkpoint; the checkpoint file keeps up with the chunks."""
    limit = 8 * 1024 * 1024
    chunk, lanes = _pacing(limit)  # the export's chunks and lanes under this limit
    # 64 MiB of data filling most of an 80 MiB disk: 90 % of the progress is about 90 % of the reading on
    # either path (an export counts the allocated bytes it copied, a replication its place on the disk).
    src, dst = inventories(stack, [])
    create_vm(src, "vm-a", size=80 * 1024 * 1024, data_mib=64)
    with default_heartbeat_timeout(stack), stack.client() as api:
        origin, dest = endpoints(api, src, dst)
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
                                 source_environment={"bandwidth_limit": limit})
        done, total = wait_for(lambda: (p := export_progress(api.get_migration(m["id"])))[1]
                               and p[0] * 10 >= p[1] * 9 and p, 120, 0.05, "90 % of the export")
        worker = stack.stack.procs["worker"]
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        assert done < total, "the export finished before the kill"
        stack.stack.restart("worker")
        final = wait_final(api, m["id"], timeout=240)
    assert final["last_execution_status"] == "COMPLETED", final["tasks"]
    resumed, read = _copy_events(final)
    already = resumed[-1]
    print(f"killed at {done} of {total} bytes; the retry resumed at {already} and re-read {read} bytes")
    # What the progress showed before the kill was already in the checkpoint ...
    assert already >= done, (already, done)
    # ... and the retry re-reads at most the 10 % left plus one chunk per lane (a replication keeps its
    # checkpoint per batch of a quarter second of the cap: less than that).
    assert read <= total // 10 + lanes * chunk, (read, total, lanes, chunk)
    assert identical(src / "vm-a" / "disk-0.raw", dst / "vm-a" / "disk-0.qcow2")


def test_api_restart_mid_migration_loses_nothing(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a"], data_mib=32)
    with stack.client() as api:
        m = start_slow_migration(api, src, dst, limit_mib=8, notes="survives")
        proc = stack.stack.procs["api"]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stack.stack.restart("api")
        wait_port("127.0.0.1", stack.settings.api_port, 60)
        assert api.get_migration(m["id"])["notes"] == "survives"
        final = wait_final(api, m["id"], timeout=180)
    assert final["last_execution_status"] == "COMPLETED"
    assert {t["status"] for t in final["tasks"]} == {"COMPLETED"}
    assert identical(src / "vm-a" / "disk-0.raw", dst / "vm-a" / "disk-0.qcow2")
