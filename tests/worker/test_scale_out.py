"""The production topology on one machine: Temporal (dev server standing in for a cluster), PostgreSQL,
two API processes and three workers with different host ids (issue 18).

VMs of one migration spread over the workers; one worker is killed for good (SIGKILL, never restarted)
while it exports a VM. That VM's next disk step waits for the dead host's queue for
``STERNA_HOST_SCHEDULE_TO_START_TIMEOUT`` (10 s here), then its disk steps start again from a new
snapshot on another host, and it completes identical to its source. The source's transfer limit
(``STERNA_MAX_TRANSFERS_PER_SOURCE_HOST``) holds across the three workers meanwhile. All of it twice:
as the one-shot migration, and as a migration that runs on transfers (its "export" is the execution's
replication, which fails over the same way).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from activities import names
from core.settings import Settings
from devstack.launcher import temporal_command, wait_port
from devstack.sample import create_vm
from tests.conftest import FINAL, wait_for
from tests.helpers import identical
from tests.peers import free_port, postgres_database

pytestmark = pytest.mark.slow

HOSTS = ["alpha", "bravo", "charlie"]
VMS = [f"vm-{i}" for i in range(8)]
WAIT_FOR_HOST = 10
SOURCE_SLOTS = 2


class Topology:
    def __init__(self, root: Path, db_url: str, on_transfers: bool = False, hosts: list[str] = HOSTS,
                 **env: str) -> None:
        self.root = root
        self.hosts = hosts
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.temporal = f"127.0.0.1:{free_port()}"
        # Nothing of another fixture's stack (the session's ``stack`` exports its settings) leaks in.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("STERNA_", "TEMPORAL_"))}
        self.env = {
            **inherited,
            "STERNA_DATA_DIR": str(root),
            "STERNA_DATABASE_URL": db_url,
            "TEMPORAL_ADDRESS": self.temporal,
            "STERNA_SECRET_KEY": "8wQjO5X0Qm3h2dT0FZ5y0Y6xHkGv1tq3N4j9w8m0a0E=",
            "STERNA_HEARTBEAT_TIMEOUT": "3",
            "STERNA_RETRY_MAX_INTERVAL": "1",
            "STERNA_HOST_SCHEDULE_TO_START_TIMEOUT": str(WAIT_FOR_HOST),
            "STERNA_MAX_DISK_ACTIVITIES": "2",
            # All the VMs live in one local inventory, one source host: 2 of the 8 exports read at once.
            "STERNA_MAX_TRANSFERS_PER_SOURCE_HOST": str(SOURCE_SLOTS),
            "STERNA_API_HOST": "127.0.0.1",
            "STERNA_MIGRATIONS_ON_TRANSFERS": "1" if on_transfers else "0",
            **env,
        }
        self.api_urls: list[str] = []

    def spawn(self, name: str, cmd: list[str], **env: str) -> subprocess.Popen[bytes]:
        with open(self.root / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**self.env, **env},
                                    start_new_session=True)
        self.procs[name] = proc
        return proc

    def start(self) -> None:
        settings = Settings(data_dir=self.root, temporal_address=self.temporal, temporal_ui_port=free_port())
        host, port = self.temporal.rsplit(":", 1)
        wait_port(host, int(port), 60, self.spawn("temporal", temporal_command(settings)), "temporal")
        sterna = [sys.executable, "-m", "client.cli"]
        for i in range(2):
            port_ = free_port()
            # The first API upgrades the schema; the second, as in production, leaves it to the init step.
            api = self.spawn(f"api-{i}", [*sterna, "api"], STERNA_API_PORT=str(port_),
                             STERNA_DB_UPGRADE_ON_START="true" if i == 0 else "false")
            wait_port("127.0.0.1", port_, 90, api, f"api-{i}")
            self.api_urls.append(f"http://127.0.0.1:{port_}")
        for host_id in self.hosts:
            self.spawn(f"worker-{host_id}", [*sterna, "worker"], STERNA_WORKER_HOST_ID=host_id,
                       STERNA_SCRATCH_DIR=str(self.root / f"scratch-{host_id}"),
                       STERNA_WORKER_METRICS_ADDRESS=f"127.0.0.1:{free_port()}",
                       STERNA_TEMPORAL_METRICS_ADDRESS=f"127.0.0.1:{free_port()}")

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


# A migration runs as the one-shot MigrationWorkflow, or as a live_migration transfer whose execution
# replicates each VM and whose deployment imports it (api.live_migrations): both fail over alike.
@pytest.fixture(params=["one-shot", "on-transfers"])
def topology(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Topology]:
    with ExitStack() as cleanup:
        topo = Topology(tmp_path, cleanup.enter_context(postgres_database()), request.param == "on-transfers")
        cleanup.callback(topo.stop)
        topo.start()
        yield topo


def _inventories(root: Path, vms: list[str], data_mib: int) -> tuple[Path, Path]:
    """A source inventory of ``vms`` (64 MiB disks, ``data_mib`` of data each) and an empty destination."""
    src, dst = root / "inventories" / "src", root / "inventories" / "dst"
    dst.mkdir(parents=True)
    for i, vm in enumerate(vms):
        create_vm(src, vm, size=64 * 1024**2, data_mib=data_mib, seed=i + 1)
    return src, dst


def _migrate(api: httpx.Client, src: Path, dst: Path, vms: list[str]) -> str:
    """A local -> local migration of ``vms``, unmorphed, each copy capped at 1 MiB/s; its id."""
    ids = [api.post("/endpoints", json={"endpoint": {"name": n, "type": "local", "connection_info": {"path": str(p)}}}
                    ).json()["endpoint"]["id"] for n, p in (("src", src), ("dst", dst))]
    created = api.post("/migrations", json={"migration": {
        "origin_endpoint_id": ids[0], "destination_endpoint_id": ids[1], "instances": vms, "skip_os_morphing": True,
        "source_environment": {"bandwidth_limit": 1024 * 1024}}})
    assert created.status_code == 200, created.text
    migration_id: str = created.json()["migration"]["id"]
    return migration_id


def _exports(migration: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["instance"]: t for t in migration["tasks"] if t["task_type"] == "REPLICATE_DISKS"}


def test_vms_spread_over_workers_and_a_dead_workers_vm_completes_elsewhere(topology: Topology) -> None:
    src, dst = _inventories(topology.root, VMS, data_mib=6)
    first, second = (httpx.Client(base_url=f"{url}/v1/ops", timeout=30) for url in topology.api_urls)
    with first, second:
        # 1 MiB/s per transfer: each export lasts ~6 s, time enough to kill its worker in the middle.
        migration_id = _migrate(first, src, dst, VMS)

        def show() -> dict[str, Any]:
            # Read through the other API process: both serve the same records.
            body: dict[str, Any] = second.get(f"/migrations/{migration_id}").json()["migration"]
            return body

        def exporting() -> tuple[str, str] | None:
            for vm, t in _exports(show()).items():
                if t["status"] == "RUNNING" and t["host"] and t["progress_updates"] \
                        and t["progress_updates"][-1]["current_step"] > 0:
                    return vm, t["host"]
            return None

        victim_vm, victim = wait_for(exporting, 90, 0.2, "an export under way")
        topology.procs[f"worker-{victim}"].kill()  # for good: this host never comes back
        topology.procs[f"worker-{victim}"].wait()
        final = wait_for(lambda: (m := show())["last_execution_status"] in FINAL and m, 150, 0.5,
                         "the migration to finish")
    hosts = {vm: t["host"] for vm, t in _exports(final).items()}
    print(f"killed {victim} while it exported {victim_vm}; export hosts: {hosts}")
    assert final["last_execution_status"] == "COMPLETED", [
        (t["instance"], t["task_type"], t["status"], t["exception_details"]) for t in final["tasks"]]
    for vm in VMS:
        assert identical(src / vm / "disk-0.raw", dst / vm / "disk-0.qcow2"), vm
    assert hosts[victim_vm] != victim and hosts[victim_vm] in HOSTS
    moved = [e["message"] for e in _exports(final)[victim_vm]["events"] if "on another host" in e["message"]]
    assert moved and f"sterna-host-{victim}" in moved[0], _exports(final)[victim_vm]["events"]
    snapshot = next(t for t in final["tasks"] if t["instance"] == victim_vm
                    and t["task_type"] == "CREATE_SOURCE_SNAPSHOT")
    assert any("of the lost host removed" in e["message"] for e in snapshot["events"]), snapshot["events"]
    # Spread: the exports ran on more than one host (the killed one included).
    first_hosts = {e["message"].rsplit(" ", 1)[-1] for t in final["tasks"] if t["task_type"] == "CREATE_SOURCE_SNAPSHOT"
                   for e in t["events"] if "created on host" in e["message"]}
    assert len(first_hosts) >= 2, first_hosts
    # The limit held exports back across workers, and each waiting one got a slot in the end (but an
    # attempt that waited on the killed worker: that VM's export started again elsewhere).
    waits = 0
    for vm, export in _exports(final).items():
        events = [e["message"] for e in export["events"]]
        waited = sum(m.startswith(f"Waiting for one of the {SOURCE_SLOTS} transfer slots") for m in events)
        got = sum(m.startswith("Got transfer slot") for m in events)
        waits += waited
        assert got == waited or any("on another host" in m for m in events), (vm, events)
    assert waits, "no export had to wait for the source's transfer slots"


async def _answered_probes(address: str) -> list[str]:
    """The workflows whose history holds a completed ``HOST_ALIVE``: steps that waited past the host timeout."""
    client = await Client.connect(address)
    found = []
    async for run in client.list_workflows():
        history = await client.get_workflow_handle(run.id, run_id=run.run_id).fetch_history()
        probes = {e.event_id for e in history.events if e.HasField("activity_task_scheduled_event_attributes")
                  and e.activity_task_scheduled_event_attributes.activity_type.name == names.HOST_ALIVE}
        found += [run.id for e in history.events if e.HasField("activity_task_completed_event_attributes")
                  and e.activity_task_completed_event_attributes.scheduled_event_id in probes]
    return found


def test_a_busy_hosts_steps_wait_for_it_and_start_again_nowhere(tmp_path: Path) -> None:
    """One host with one disk slot: the VMs' pinned steps wait on its queue past
    ``STERNA_HOST_SCHEDULE_TO_START_TIMEOUT``. The host answers its probe (``workflows.hosts``), so they wait
    again, and every VM completes there from its first snapshot: a busy host is not a lost one."""
    vms = [f"vm-{i}" for i in range(4)]
    with ExitStack() as cleanup:
        topology = Topology(tmp_path, cleanup.enter_context(postgres_database()), on_transfers=True,
                            hosts=["alpha"], STERNA_MAX_DISK_ACTIVITIES="1")
        cleanup.callback(topology.stop)
        topology.start()
        src, dst = _inventories(tmp_path, vms, data_mib=8)
        with httpx.Client(base_url=f"{topology.api_urls[0]}/v1/ops", timeout=30) as api:
            # 1 MiB/s: each VM's copy holds the host's one slot ~8 s, so the third VM's waits past 10 s.
            migration_id = _migrate(api, src, dst, vms)
            final = wait_for(lambda: (m := api.get(f"/migrations/{migration_id}").json()["migration"])
                             ["last_execution_status"] in FINAL and m, 240, 0.5, "the migration to finish")
        probed = asyncio.run(_answered_probes(topology.temporal))

    assert final["last_execution_status"] == "COMPLETED", [
        (t["instance"], t["task_type"], t["status"], t["exception_details"]) for t in final["tasks"]]
    moved = [(t["instance"], e["message"]) for t in final["tasks"] for e in t["events"]
             if "on another host" in e["message"]]
    assert not moved, moved
    assert probed, "no step waited past the host timeout: the host was never busy, so this proves nothing"
    waited = [(t["instance"], t["task_type"]) for t in final["tasks"] for e in t["events"]
              if e["message"].startswith("sterna-host-alpha took no step within 10 s but its worker answers")]
    assert waited, "the task of a step that waited for the busy host says why"
    snapshots = [e["message"] for t in final["tasks"] if t["task_type"] == "CREATE_SOURCE_SNAPSHOT"
                 for e in t["events"] if "created on host" in e["message"]]
    assert len(snapshots) == len(vms), snapshots  # one snapshot per VM: none started again
    for vm in vms:
        assert identical(src / vm / "disk-0.raw", dst / vm / "disk-0.qcow2"), vm
