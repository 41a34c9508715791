"""Transfers, executions and deployments local -> local through the REST API, on the real stack."""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from client.sdk import SternaClient
from tests.conftest import RunningStack, wait_final, wait_for
from tests.helpers import api_env, endpoints, identical, inventories, own_api_and_worker
from tests.peers import checked

pytestmark = pytest.mark.slow

MiB = 1024**2
CHUNK = 64 * 1024


def replica_of(dst: Path, transfer_id: str, instance: str = "vm-a") -> Path:
    return dst / ".sterna-replicas" / transfer_id / instance / "disk-0.raw"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(4 * MiB):
            h.update(block)
    return h.hexdigest()


def same_bytes(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and sha256(a) == sha256(b)


def scatter(disk: Path, total: int, piece: int = 256 * 1024, seed: int = 7) -> int:
    """Overwrite ``total`` bytes with random data in ``piece``-sized runs at scattered, chunk-aligned offsets."""
    rng = random.Random(seed)
    slots = rng.sample(range(disk.stat().st_size // piece), total // piece)
    with disk.open("r+b") as f:
        for slot in slots:
            f.seek(slot * piece)
            f.write(rng.randbytes(piece))
    return len(slots) * piece


def task_of(execution: dict[str, Any], task_type: str, instance: str = "vm-a") -> dict[str, Any]:
    return next(t for t in execution["tasks"] if t["task_type"] == task_type and t["instance"] == instance)


def bytes_written(execution: dict[str, Any], instance: str = "vm-a") -> int:
    events = [e["message"] for e in task_of(execution, "REPLICATE_DISKS", instance)["events"]]
    found = [int(m.group(1)) for e in events if (m := re.search(r"wrote (\d+) bytes", e))]
    assert found, events
    return sum(found)


def new_transfer(api: Any, src: Path, dst: Path, **fields: Any) -> dict[str, Any]:
    origin, dest = endpoints(api, src, dst)
    return dict(api.create_transfer(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
                                    skip_os_morphing=True, destination_environment={"verify_boot": False},
                                    **fields))


def test_incremental_execution_then_two_deployments(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a"], data_mib=32)
    source = src / "vm-a" / "disk-0.raw"
    with stack.client() as api:
        t = new_transfer(api, src, dst)
        assert t["last_execution_status"] == "UNEXECUTED" and t["scenario"] == "replica"
        e1 = api.execute_transfer(t["id"])
        assert [x["task_type"] for x in e1["tasks"]] == [
            "VALIDATE_TRANSFER_SOURCE_INPUTS", "DEPLOY_TRANSFER_SOURCE_RESOURCES", "REPLICATE_DISKS",
            "DELETE_TRANSFER_SOURCE_RESOURCES"]
        e1 = api.wait_execution(t["id"], e1["id"], 300)
        assert e1["status"] == "COMPLETED", e1
        assert e1["number"] == 1
        replica = replica_of(dst, t["id"])
        assert same_bytes(source, replica)

        changed = scatter(source, 16 * MiB)
        e2 = api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)
        assert e2["status"] == "COMPLETED" and e2["number"] == 2
        written = bytes_written(e2)
        print(f"\nsecond execution wrote {written} bytes for {changed} changed ({written / changed:.3f}x)")
        assert written <= 1.05 * changed
        assert same_bytes(source, replica)
        assert api.get_transfer(t["id"])["last_execution_status"] == "COMPLETED"

        digest = sha256(replica)
        d1 = api.wait_deployment(api.create_deployment(t["id"], skip_os_morphing=True)["id"], 300)
        assert d1["last_execution_status"] == "COMPLETED", d1
        assert d1["transfer_id"] == t["id"]
        assert identical(replica, dst / "vm-a" / "disk-0.qcow2")
        assert sha256(replica) == digest, "a deployment never writes into the replica"
        # A test failover torn down, then the real one from the same replica.
        shutil.rmtree(dst / "vm-a")
        d2 = api.wait_deployment(api.create_deployment(t["id"], skip_os_morphing=True)["id"], 300)
        assert d2["last_execution_status"] == "COMPLETED", d2
        assert identical(replica, dst / "vm-a" / "disk-0.qcow2")
        assert sha256(replica) == digest
        assert {d["id"] for d in api.list_deployments()} >= {d1["id"], d2["id"]}
        # Disaster recovery goes on: the replica keeps syncing while the deployed instance exists.
        scatter(source, 1 * MiB, seed=11)
        e3 = api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)
        assert e3["status"] == "COMPLETED", e3
        assert same_bytes(source, replica)


def counts(stack: RunningStack, api: Any) -> tuple[int, int, int]:
    """Transfers, deployments and executions visible through the API (to check nothing was written)."""
    transfers = api.list_transfers(show_deleted="true")
    return (len(transfers), len(api.list_deployments(show_deleted="true")),
            sum(len(api.list_executions(t["id"])) for t in transfers if t["deleted"] == "0"))


def error_of(r: Any, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()["error"]
    assert body["code"] == status and body["fault"] and body["message"]
    return str(body["message"])


def test_bad_input_gets_4xx_and_writes_nothing(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a"], data_mib=2)
    with stack.client() as api:
        origin, dest = endpoints(api, src, dst)
        before = counts(stack, api)
        same = {"transfer": {"origin_endpoint_id": origin, "destination_endpoint_id": origin, "instances": ["vm-a"]}}
        assert "SameDestination" in error_of(api.http.post("/transfers", json=same), 400)
        twin = api.create_endpoint(f"twin-{src.name}", "local", {"path": str(src)})["id"]
        same["transfer"]["destination_endpoint_id"] = twin
        assert "SameDestination" in error_of(api.http.post("/transfers", json=same), 400)
        pool = {"transfer": {"origin_endpoint_id": origin, "destination_endpoint_id": dest, "instances": ["vm-a"],
                             "origin_minion_pool_id": "5d0f4e7a-0000-4000-8000-000000000000"}}
        assert "minion pools" in error_of(api.http.post("/transfers", json=pool), 400)
        # Issue 11, reproducers 9 and 10: a tiny, negative or non-numeric limit is refused up front.
        for value in (1, -1, "fast"):
            tiny = {"transfer": {"origin_endpoint_id": origin, "destination_endpoint_id": dest, "instances": ["vm-a"],
                                 "source_environment": {"bandwidth_limit": value}}}
            message = error_of(api.http.post("/transfers", json=tiny), 400)
            assert "source_environment.bandwidth_limit must be an integer" in message
        assert counts(stack, api) == before

        t = api.create_transfer(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"])
        before = counts(stack, api)
        tiny_update = {"transfer": {"destination_environment": {"bandwidth_limit": 1}}}
        r = api.http.put(f"/transfers/{t['id']}", json=tiny_update)
        assert "destination_environment.bandwidth_limit must be an integer" in error_of(r, 400)
        assert "bandwidth_limit" not in api.get_transfer(t["id"])["destination_environment"]
        message = error_of(api.http.post("/deployments", json={"deployment": {"transfer_id": t["id"]}}), 400)
        assert "no completed execution" in message
        for field, value in (("minute", 60), ("hour", 24), ("dom", 0), ("month", 13), ("dow", 7)):
            r = api.http.post(f"/transfers/{t['id']}/schedules", json={"schedule": {field: value}})
            assert f"'{field}' must be between" in error_of(r, 400)
        r = api.http.post(f"/transfers/{t['id']}/schedules",
                          json={"schedule": {"hour": 1}, "expiration_date": "2001-01-01T00:00:00Z"})
        assert "future" in error_of(r, 400)
        assert api.list_schedules(t["id"], show_expired=True) == []
        assert error_of(api.http.get("/transfers", params={"status": "BOGUS"}), 400).startswith("Invalid status")
        assert counts(stack, api) == before


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_a_destination_that_checks_at_create_refuses_a_transfer_before_anything_is_written(
        stack: RunningStack, tmp_path: Path) -> None:
    """``CHECKS_AT_CREATE`` (Azure's VM size, subnets, credentials) holds for transfers as for migrations:
    at create, and at an update that changes the destination environment, whose stored secrets the
    worker resolves for the check. On an API and worker of their own that know ``checked-local``."""
    src, dst = inventories(stack, ["vm-a"], data_mib=2)
    plugins = os.pathsep.join([stack.stack.env["PYTHONPATH"], str(checked.plugin_path(tmp_path))])
    secret = "pw-" + uuid.uuid4().hex
    with own_api_and_worker(stack, tmp_path / "own", PYTHONPATH=plugins) as own, \
            SternaClient(f"http://127.0.0.1:{own.settings.api_port}", "checked-project") as api:
        origin = api.create_endpoint(f"src-{src.name}", "local", {"path": str(src)})["id"]
        dest = api.create_endpoint(f"dst-{dst.name}", checked.PLATFORM, {"path": str(dst)})["id"]
        fields = {"origin_endpoint_id": origin, "destination_endpoint_id": dest, "instances": ["vm-a"]}
        before = counts(stack, api)
        bad = {"transfer": {**fields, "destination_environment": {"flavor_name": "m1.galactic"}}}
        message = error_of(api.http.post("/transfers", json=bad), 400)
        assert "refused the transfer" in message and "m1.galactic" in message, message
        assert counts(stack, api) == before, "a refused transfer writes nothing"

        t = api.create_transfer(**fields, destination_environment={"flavor_name": "m1.small", "admin_password": secret})
        before = counts(stack, api)
        r = api.http.put(f"/transfers/{t['id']}", json={"transfer": {"destination_environment": {
            "flavor_name": "m1.galactic"}}})
        assert "m1.galactic" in error_of(r, 400)
        assert api.get_transfer(t["id"])["destination_environment"]["flavor_name"] == "m1.small"
        assert counts(stack, api) == before, "a refused update records no execution"
        # The stored secret reaches the check as its value (the check refuses a reference).
        api.update_transfer(t["id"], destination_environment={"flavor_name": "m1.medium"})
        shown = api.get_transfer(t["id"])["destination_environment"]
        assert shown == {"flavor_name": "m1.medium", "admin_password": "***"}, shown


def test_cancel_mid_execution_then_next_execution_resyncs(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a"], data_mib=48)
    source = src / "vm-a" / "disk-0.raw"
    with stack.client() as api:
        # 4 MiB/s: the replication of 48 MiB of data lasts ~12 s, long enough to act on it.
        t = new_transfer(api, src, dst, source_environment={"bandwidth_limit": 4 * MiB})
        e = api.execute_transfer(t["id"])

        def replicating() -> bool:
            task = task_of(api.get_execution(t["id"], e["id"]), "REPLICATE_DISKS")
            return task["status"] == "RUNNING" and any(p["current_step"] > 0 for p in task["progress_updates"])

        wait_for(replicating, 120, 0.1, "replication under way")
        before = counts(stack, api)
        message = error_of(api.http.post(f"/transfers/{t['id']}/executions", json={"execution": {}}), 400)
        assert "active execution" in message
        assert "active execution" in error_of(api.http.delete(f"/transfers/{t['id']}"), 400)
        r = api.http.post("/deployments", json={"deployment": {"transfer_id": t["id"], "force": None}})
        assert r.status_code == 400, r.text
        assert counts(stack, api) == before

        api.cancel_execution(t["id"], e["id"])
        final = api.wait_execution(t["id"], e["id"], 60)
        assert final["status"] == "CANCELED"
        assert task_of(final, "REPLICATE_DISKS")["status"] == "CANCELED"
        assert task_of(final, "DELETE_TRANSFER_SOURCE_RESOURCES")["status"] == "COMPLETED"
        state = api.get_transfer(t["id"], include_task_info=True)["info"]["vm-a"]["volumes_info"][0]
        assert state["replica_state"]["trusted"] is False, "a cancelled sync is never trusted"
        assert not (Path(stack.settings.scratch) / t["id"] / "vm-a").exists(), "scratch and snapshot released"

        api.update_transfer(t["id"], source_environment={"bandwidth_limit": None})
        again = api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)
        assert again["status"] == "COMPLETED"
        assert same_bytes(source, replica_of(dst, t["id"]))
        assert any("Full sync" in ev["message"] for ev in task_of(again, "REPLICATE_DISKS")["events"])
        api.delete_transfer_disks(t["id"])
        assert not replica_of(dst, t["id"]).exists()
        api.delete_transfer(t["id"])
        assert t["id"] not in {x["id"] for x in api.list_transfers()}


async def _temporal(stack: RunningStack) -> Any:
    from temporalio.client import Client

    return await Client.connect(stack.settings.temporal_address, namespace=stack.settings.temporal_namespace)


async def _schedule_ids(stack: RunningStack) -> set[str]:
    client = await _temporal(stack)
    return {s.id async for s in await client.list_schedules()}


async def _trigger(stack: RunningStack, schedule_id: str) -> None:
    await (await _temporal(stack)).get_schedule_handle(schedule_id).trigger()


async def _paused(stack: RunningStack, schedule_id: str) -> bool:
    desc = await (await _temporal(stack)).get_schedule_handle(schedule_id).describe()
    return bool(desc.schedule.state.paused)


def test_schedule_is_a_temporal_schedule_that_runs_executions(stack: RunningStack) -> None:
    import asyncio

    src, dst = inventories(stack, ["vm-a"], data_mib=4)
    with stack.client() as api:
        t = new_transfer(api, src, dst)
        s = api.create_schedule(t["id"], {"minute": 5, "hour": 3})
        assert s["enabled"] is True and s["schedule"] == {"minute": 5, "hour": 3} and s["expiration_date"] is None
        temporal_id = f"transfer-schedule-{s['id']}"
        wait_for(lambda: temporal_id in asyncio.run(_schedule_ids(stack)), 30, 0.5, "schedule listed in Temporal")
        assert asyncio.run(_paused(stack, temporal_id)) is False

        asyncio.run(_trigger(stack, temporal_id))
        executions = wait_for(lambda: [e for e in api.list_executions(t["id"]) if e["status"] == "COMPLETED"],
                              120, 0.5, "the triggered execution to complete")
        assert executions[0]["type"] == "transfer_execution"
        assert same_bytes(src / "vm-a" / "disk-0.raw", replica_of(dst, t["id"]))

        assert api.update_schedule(t["id"], s["id"], enabled=False)["enabled"] is False
        assert asyncio.run(_paused(stack, temporal_id)) is True
        assert [x["id"] for x in api.list_schedules(t["id"])] == [s["id"]]
        api.delete_schedule(t["id"], s["id"])
        assert temporal_id not in asyncio.run(_schedule_ids(stack))
        assert api.list_schedules(t["id"]) == []

        soon = (datetime.now(UTC) + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        expiring = api.create_schedule(t["id"], {"minute": 0}, expiration_date=soon)
        wait_for(lambda: not api.list_schedules(t["id"]), 10, 0.5, "the expired schedule to be hidden")
        assert [x["id"] for x in api.list_schedules(t["id"], show_expired=True)] == [expiring["id"]]


def test_auto_deploy_execution_creates_a_deployment(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a"], data_mib=2)
    with stack.client() as api:
        t = new_transfer(api, src, dst)
        e = api.wait_execution(t["id"], api.execute_transfer(t["id"], auto_deploy=True)["id"], 120)
        assert e["status"] == "COMPLETED"
        d = wait_for(lambda: [x for x in api.list_deployments() if x["transfer_id"] == t["id"]], 60, 0.5,
                     "the auto-deployment")[0]
        assert d["deployer_id"] == e["id"]
        assert api.wait_deployment(d["id"], 300)["last_execution_status"] == "COMPLETED"
        assert identical(replica_of(dst, t["id"]), dst / "vm-a" / "disk-0.qcow2")


def test_wire_shapes_of_coriolisclient_1_2(stack: RunningStack) -> None:
    """The exact bodies and query strings python-coriolisclient 1.2.x sends (nulls included)."""
    src, dst = inventories(stack, ["vm-a"], data_mib=2)
    with stack.client() as api:
        origin, dest = endpoints(api, src, dst)
        # `coriolis transfer create`: no source_environment key when empty, explicit nulls elsewhere.
        r = api.http.post("/transfers", json={"transfer": {
            "origin_endpoint_id": origin, "destination_endpoint_id": dest,
            "destination_environment": {"verify_boot": False}, "instances": ["vm-a"], "scenario": "replica",
            "network_map": {}, "notes": None, "storage_mappings": {}, "user_scripts": {"global": {}, "instances": {}},
            "clone_disks": None, "skip_os_morphing": True}})
        assert r.status_code == 200, r.text
        t = r.json()["transfer"]
        for key in ("id", "origin_endpoint_id", "destination_endpoint_id", "instances", "scenario", "notes",
                    "executions", "last_execution_status", "origin_minion_pool_id", "destination_minion_pool_id",
                    "instance_osmorphing_minion_pool_mappings", "clone_disks", "skip_os_morphing", "created_at",
                    "updated_at", "deleted_at", "deleted", "user_scripts", "storage_mappings", "network_map",
                    "source_environment", "destination_environment", "transfer_result", "reservation_id"):
            assert key in t, key
        assert t["clone_disks"] is True and t["notes"] is None and t["executions"] == []

        # `coriolis transfer execute`
        r = api.http.post(f"/transfers/{t['id']}/executions",
                          json={"execution": {"shutdown_instances": False, "auto_deploy": False}})
        assert r.status_code == 200, r.text
        e = api.wait_execution(t["id"], r.json()["execution"]["id"], 120)
        assert e["status"] == "COMPLETED"
        # `coriolis transfer execution list` with marker/limit/sort, repeated sort_key/sort_dir.
        r = api.http.get(f"/transfers/{t['id']}/executions",
                         params=[("limit", "5"), ("sort_key", "created_at"), ("sort_dir", "desc")])
        assert r.status_code == 200 and [x["id"] for x in r.json()["executions"]] == [e["id"]]

        # `coriolis transfer schedule create`: an unwrapped body, RFC 3339 "Z" date.
        r = api.http.post(f"/transfers/{t['id']}/schedules", json={
            "schedule": {"minute": 15, "hour": 2}, "enabled": False, "shutdown_instance": False,
            "auto_deploy": False, "expiration_date": "2099-01-01T00:00:00Z"})
        assert r.status_code == 200, r.text
        s = r.json()["schedule"]
        assert s["expiration_date"] == "2099-01-01T00:00:00.000000" and s["enabled"] is False
        # `--hide-expired` sends show_expired=False (a Python bool in a query string).
        r = api.http.get(f"/transfers/{t['id']}/schedules?show_expired=False")
        assert [x["id"] for x in r.json()["schedules"]] == [s["id"]]
        # `coriolis transfer schedule update --no-expiration-date`
        r = api.http.put(f"/transfers/{t['id']}/schedules/{s['id']}", json={"expiration_date": None})
        assert r.status_code == 200 and r.json()["schedule"]["expiration_date"] is None

        # `coriolis deployment create`: keyed on replica_id, with nulls.
        r = api.http.post("/deployments", json={"deployment": {
            "replica_id": t["id"], "clone_disks": True, "force": False, "skip_os_morphing": True,
            "user_scripts": None}})
        assert r.status_code == 200, r.text
        d = api.wait_deployment(r.json()["deployment"]["id"], 300)
        assert d["last_execution_status"] == "COMPLETED" and d["transfer_id"] == t["id"]
        assert d["transfer_result"]["vm-a"]["details"]["path"] == str(dst / "vm-a")
        # Old clients: the same transfer under /replicas.
        r = api.http.get(f"/replicas/{t['id']}")
        assert r.status_code == 200 and r.json()["replica"]["id"] == t["id"]
        assert api.http.post(f"/transfers/{t['id']}/executions/{e['id']}/actions",
                             json={"cancel": {"force": False}}).status_code == 400


def test_transfers_never_show_as_migrations_and_a_migration_lists_as_a_live_migration(stack: RunningStack) -> None:
    """Transfers, deployments and migrations share the actions table; what each listing shows.

    A replica transfer is never a migration: not in ``/migrations``, not at ``/migrations/{id}``. A
    migration is, by default, a ``live_migration`` transfer of its own id: listed in ``/transfers``, as
    Coriolis does since it dropped ``/migrations``, and not in the legacy ``/replicas``, whose clients
    know it as a migration. With ``STERNA_MIGRATIONS_ON_TRANSFERS`` off (kept one release) a migration
    is one-shot: no transfer at all.
    """
    src, dst = inventories(stack, ["vm-a"], data_mib=2)
    with stack.client() as api:
        t = new_transfer(api, src, dst)
        origin, dest = endpoints(api, src, dst)
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
                                 destination_environment={"instance_name": "vm-a-migrated"})
        assert wait_final(api, m["id"])["last_execution_status"] == "COMPLETED"
        assert identical(src / "vm-a" / "disk-0.raw", dst / "vm-a-migrated" / "disk-0.qcow2")
        for listing in (api.list_migrations(), api.list_migrations(detail=True)):
            assert t["id"] not in {x["id"] for x in listing} and m["id"] in {x["id"] for x in listing}
        assert api.http.get(f"/migrations/{t['id']}").status_code == 404
        transfers = {x["id"]: x for x in api.list_transfers()}
        assert transfers[t["id"]]["scenario"] == "replica"
        assert transfers[m["id"]]["scenario"] == "live_migration"
        replicas = {x["id"] for x in api.http.get("/replicas").json()["replicas"]}
        assert t["id"] in replicas and m["id"] not in replicas

    with api_env(stack, STERNA_MIGRATIONS_ON_TRANSFERS="0"), stack.client() as api:
        one_shot = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
                                        destination_environment={"instance_name": "vm-a-one-shot"})
        assert wait_final(api, one_shot["id"])["last_execution_status"] == "COMPLETED"
        assert identical(src / "vm-a" / "disk-0.raw", dst / "vm-a-one-shot" / "disk-0.qcow2")
        assert one_shot["transfer_id"] is None
        assert one_shot["id"] not in {x["id"] for x in api.list_transfers()}
        assert api.http.get(f"/transfers/{one_shot['id']}").status_code == 404
        assert api.http.get(f"/migrations/{t['id']}").status_code == 404


def test_cli_transfer_execution_schedule_deployment(stack: RunningStack, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from client.cli import run

    src, dst = inventories(stack, ["vm-a"], data_mib=2)
    base = ["--url", stack.url, "--project", "test-project"]

    def cli(*argv: str) -> Any:
        capsys.readouterr()
        assert run([*base, *argv]) == 0
        out = capsys.readouterr().out
        return json.loads(out) if out.strip() else None

    with stack.client() as api:
        origin, dest = endpoints(api, src, dst)
    t = cli("transfer", "create", "--origin-endpoint", origin, "--destination-endpoint", dest, "--instance", "vm-a",
            "--skip-os-morphing", "--destination-environment", '{"verify_boot": false}', "-f", "json")
    assert t["scenario"] == "replica" and t["skip_os_morphing"] is True
    assert t["id"] in {x["id"] for x in cli("transfer", "list", "-f", "json")}
    e = cli("transfer", "execute", t["id"], "-f", "json")
    with stack.client() as api:
        assert api.wait_execution(t["id"], e["id"], 120)["status"] == "COMPLETED"
    assert [x["id"] for x in cli("transfer", "execution", "list", t["id"], "-f", "json")] == [e["id"]]
    s = cli("transfer", "schedule", "create", t["id"], "-M", "30", "-H", "4", "--disabled", "-f", "json")
    assert s["schedule"] == {"minute": 30, "hour": 4} and s["enabled"] is False
    assert cli("transfer", "schedule", "update", t["id"], s["id"], "--enabled", "-f", "json")["enabled"] is True
    cli("transfer", "schedule", "delete", t["id"], s["id"])
    d = cli("deployment", "create", t["id"], "--skip-os-morphing", "-f", "json")
    with stack.client() as api:
        assert api.wait_deployment(d["id"], 300)["last_execution_status"] == "COMPLETED"
    assert cli("deployment", "show", d["id"], "-f", "json")["transfer_id"] == t["id"]
    assert run([*base, "transfer", "delete", "00000000-0000-4000-8000-000000000000"]) == 1


def test_force_cancel_terminates_and_still_releases(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a"], data_mib=48)
    with stack.client() as api:
        t = new_transfer(api, src, dst, source_environment={"bandwidth_limit": 4 * MiB})
        e = api.execute_transfer(t["id"])
        wait_for(lambda: any(p["current_step"] > 0 for p in task_of(api.get_execution(t["id"], e["id"]),
                                                                     "REPLICATE_DISKS")["progress_updates"]),
                 120, 0.1, "replication under way")
        api.cancel_execution(t["id"], e["id"], force=True)
        now = api.get_execution(t["id"], e["id"])
        assert now["status"] == "CANCELED"
        assert task_of(now, "REPLICATE_DISKS")["status"] == "FORCE_CANCELED"
        wait_for(lambda: task_of(api.get_execution(t["id"], e["id"]), "DELETE_TRANSFER_SOURCE_RESOURCES")["status"]
                 == "COMPLETED", 60, 0.3, "the forced cleanup")
        # Terminate leaves the copy running until a heartbeat tells it (up to 24 s later): the cleanup
        # stops it first, and only then removes what it writes in scratch.
        replicate = task_of(api.get_execution(t["id"], e["id"]), "REPLICATE_DISKS")
        assert any(ev["message"].endswith(": stopped") for ev in replicate["events"]), replicate["events"]
        assert not (Path(stack.settings.scratch) / t["id"] / "vm-a").exists()
        api.update_transfer(t["id"], source_environment={"bandwidth_limit": None})
        again = api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)
        assert again["status"] == "COMPLETED"
        assert same_bytes(src / "vm-a" / "disk-0.raw", replica_of(dst, t["id"]))


def data_extents(path: Path) -> list[dict[str, int]]:
    """The allocated extents of a raw image (``qemu-img map``)."""
    import json
    import subprocess

    return [e for e in json.loads(subprocess.run(["qemu-img", "map", "--output=json", "-f", "raw", str(path)],
                                                 check=True, capture_output=True, text=True).stdout) if e["data"]]


def data_midpoint(path: Path, fraction: float = 0.5) -> int:
    """The disk offset with ``fraction`` (half) of the allocated bytes before it."""
    extents = data_extents(path)
    remaining = int(sum(e["length"] for e in extents) * fraction)
    for e in extents:
        if e["length"] >= remaining:
            return int(e["start"] + remaining)
        remaining -= e["length"]
    raise AssertionError(f"{path} holds no data")


def test_worker_killed_mid_replication_resumes_from_checkpoint(stack: RunningStack) -> None:
    import signal

    src, dst = inventories(stack, ["vm-a"], data_mib=48)
    # Progress is a position on the disk; the kill must land while data is still being read, so
    # wait for the offset that has half the disk's data before it (past it, the rest is holes).
    halfway = data_midpoint(src / "vm-a" / "disk-0.raw")
    with stack.client() as api:
        t = new_transfer(api, src, dst, source_environment={"bandwidth_limit": 4 * MiB})
        e = api.execute_transfer(t["id"])

        def half() -> bool:
            updates = task_of(api.get_execution(t["id"], e["id"]), "REPLICATE_DISKS")["progress_updates"]
            return bool(updates) and updates[-1]["current_step"] >= halfway

        wait_for(half, 120, 0.1, "half of the disk's data replicated")
        worker = stack.stack.procs["worker"]
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        stack.stack.restart("worker")
        final = api.wait_execution(t["id"], e["id"], 180)
    assert final["status"] == "COMPLETED", final
    events = [ev["message"] for ev in task_of(final, "REPLICATE_DISKS")["events"]]
    resumed = [m for m in events if m.startswith("Resuming the sync")]
    assert resumed, events
    already = int(re.search(r"checkpoint: (\d+) of", resumed[0]).group(1))  # type: ignore[union-attr]
    assert already > 0
    read = int(re.search(r"read (\d+) bytes", next(m for m in events if m.startswith("Replica of"))).group(1))  # type: ignore[union-attr]
    assert read < 48 * MiB, f"the resumed attempt re-read everything ({read} bytes)"
    assert same_bytes(src / "vm-a" / "disk-0.raw", replica_of(dst, t["id"]))


def test_worker_killed_at_90_percent_of_replication_rereads_at_most_the_rest(stack: RunningStack) -> None:
    """Issue 11: at the default 30 s heartbeat timeout the server held only the sync's first heartbeat; the
    checkpoint file in scratch keeps up with every batch of chunks, the sync's unit of progress."""
    import signal

    from tests.helpers import default_heartbeat_timeout
    from workflows.transfer_types import REPLICA_CHUNK

    batch = 64 * REPLICA_CHUNK  # diskio.replica.sync_replica's default batch: its lane's unit of work
    src, dst = inventories(stack, ["vm-a"], data_mib=64)
    disk = src / "vm-a" / "disk-0.raw"
    allocated = sum(e["length"] for e in data_extents(disk))
    at_90 = data_midpoint(disk, 0.9)  # progress is a position on the disk: 90 % of the data lies before it
    with default_heartbeat_timeout(stack), stack.client() as api:
        t = new_transfer(api, src, dst, source_environment={"bandwidth_limit": 8 * MiB})
        e = api.execute_transfer(t["id"])

        def position() -> int:
            task = task_of(api.get_execution(t["id"], e["id"]), "REPLICATE_DISKS")
            return task["progress_updates"][-1]["current_step"] if task["progress_updates"] else 0

        wait_for(lambda: position() >= at_90, 120, 0.05, "90 % of the disk's data replicated")
        worker = stack.stack.procs["worker"]
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        stack.stack.restart("worker")
        final = api.wait_execution(t["id"], e["id"], 240)
    assert final["status"] == "COMPLETED", final
    events = [ev["message"] for ev in task_of(final, "REPLICATE_DISKS")["events"]]
    resumed = [m for m in events if m.startswith("Resuming the sync")]
    assert resumed, f"the sync finished before the kill: {events}"
    already = int(re.search(r"checkpoint: (\d+) of", resumed[-1]).group(1))  # type: ignore[union-attr]
    read = int(re.search(r"read (\d+) bytes", [m for m in events if m.startswith("Replica of")][-1]).group(1))  # type: ignore[union-attr]
    print(f"killed past offset {at_90}; the retry resumed at {already} and re-read {read} of {allocated} bytes")
    assert already >= at_90
    assert read <= allocated // 10 + batch, (read, allocated, batch)
    assert same_bytes(disk, replica_of(dst, t["id"]))


def test_lists_page_with_marker_limit_and_sort_keys(stack: RunningStack) -> None:
    import uuid

    src, dst = inventories(stack, ["vm-a"], data_mib=1)
    with stack.client(f"paging-{uuid.uuid4().hex[:8]}") as api:
        origin, dest = endpoints(api, src, dst)
        made = [api.create_transfer(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
                                    notes=f"n{i}")["id"] for i in range(4)]
        newest_first = [t["id"] for t in api.list_transfers()]
        assert newest_first == made[::-1]
        first = api.list_transfers(limit=2)
        assert [t["id"] for t in first] == newest_first[:2]
        rest = api.list_transfers(limit=2, marker=first[-1]["id"])
        assert [t["id"] for t in rest] == newest_first[2:]
        by_notes = api.list_transfers(sort_key="notes", sort_dir="asc")
        assert [t["notes"] for t in by_notes] == ["n0", "n1", "n2", "n3"]
        assert api.list_transfers(sort_key="notes", sort_dir="asc", marker=by_notes[1]["id"])[0]["notes"] == "n2"
        assert api.list_transfers(status="UNEXECUTED", limit=1)[0]["id"] == made[-1]
        assert api.list_transfers(status="COMPLETED") == []
        assert error_of(api.http.get("/transfers", params={"sort_key": "bogus"}), 400).startswith("Invalid sort_key")
        assert error_of(api.http.get("/transfers", params={"marker": str(uuid.uuid4())}), 404)


def test_qcow2_source_syncs_incrementally_by_its_dirty_bitmap(stack: RunningStack) -> None:
    import json
    import subprocess

    src, dst = inventories(stack, ["vm-a"], data_mib=16)
    vm = src / "vm-a"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(vm / "disk-0.raw"),
                    str(vm / "disk-0.qcow2")], check=True)
    (vm / "disk-0.raw").unlink()
    meta = json.loads((vm / "vm.json").read_text())
    meta["disks"] = [{"id": "disk-0", "file": "disk-0.qcow2", "format": "qcow2"}]
    (vm / "vm.json").write_text(json.dumps(meta))
    with stack.client() as api:
        t = new_transfer(api, src, dst)
        assert api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)["status"] == "COMPLETED"
        replica = replica_of(dst, t["id"])
        assert identical(replica, vm / "disk-0.qcow2")
        # 8 MiB written by the "guest" at scattered offsets, through qemu like a running VM would.
        offsets = random.Random(3).sample(range(256 * MiB // (256 * 1024)), 32)
        writes = [f"write -P 0x{i + 1:02x} {o * 256 * 1024} 256k" for i, o in enumerate(offsets)]
        subprocess.run(["qemu-io", "-f", "qcow2", *[a for w in writes for a in ("-c", w)], str(vm / "disk-0.qcow2")],
                       check=True, capture_output=True)
        e2 = api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)
        assert e2["status"] == "COMPLETED"
        written = bytes_written(e2)
        print(f"\nqcow2 source: second execution wrote {written} bytes for {8 * MiB} changed")
        assert written <= 1.05 * 8 * MiB
        assert identical(replica, vm / "disk-0.qcow2")
