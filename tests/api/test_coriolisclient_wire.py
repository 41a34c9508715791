"""The wire of python-coriolisclient 1.2.4's `coriolis transfer|deployment` commands, byte for byte.

Each body and query string below is what the real client sent to a Sterna stack (captured from
keystoneauth's request log while running the CLI by hand, December 2026): key order, explicit
nulls, the Python-bool ``show_expired=False``, repeated ``sort_key``/``sort_dir`` pairs. The
responses are checked for the keys the CLI's formatters read (a missing key makes the CLI fail).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.conftest import RunningStack
from tests.helpers import endpoints, inventories

pytestmark = pytest.mark.slow

JSON = {"Content-Type": "application/json"}


def send(api: Any, method: str, path: str, raw: str | None = None) -> Any:
    """The request as the client sent it: the raw JSON text, not a re-serialised dict."""
    return api.http.request(method, path, content=raw, headers=JSON if raw is not None else None)


def ok(r: Any, key: str | None = None) -> Any:
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()[key] if key else r.json()


def refused(r: Any, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    error = r.json()["error"]
    assert error["code"] == status and error["message"]
    return str(error["message"])


def test_transfer_execution_schedule_and_deployment_commands_of_the_1_2_client(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a"], data_mib=2)
    # A project of its own: the list commands below page (the 10 oldest COMPLETED transfers), and a shared
    # project holds every migration the suite ran before, each a completed live_migration transfer.
    with stack.client(f"wire-{uuid.uuid4().hex[:8]}") as api:
        origin, dest = endpoints(api, src, dst)
        # coriolis transfer create --origin-endpoint src --destination-endpoint dst --instance vm-a
        #   --scenario replica --destination-environment '{"verify_boot": false}'
        #   --source-environment '{"bandwidth_limit": 1073741824}' --network-map '{"VM Network": "br0"}'
        #   --skip-os-morphing
        t = ok(send(api, "POST", "/transfers", (
            '{"transfer": {"origin_endpoint_id": "ORIGIN", "destination_endpoint_id": "DEST", '
            '"destination_environment": {"verify_boot": false}, "instances": ["vm-a"], "scenario": "replica", '
            '"network_map": {"VM Network": "br0"}, "notes": null, "storage_mappings": {}, '
            '"user_scripts": {"global": {}, "instances": {}}, "clone_disks": null, "skip_os_morphing": true, '
            '"source_environment": {"bandwidth_limit": 1073741824}}}').replace("ORIGIN", origin).replace("DEST", dest)),
            "transfer")
        tid = t["id"]
        assert t["clone_disks"] is True and t["skip_os_morphing"] is True and t["notes"] is None
        assert t["scenario"] == "replica" and t["executions"] == [] and t["reservation_id"] is None
        assert t["origin_minion_pool_id"] is None and t["instance_osmorphing_minion_pool_mappings"] == {}

        # coriolis transfer execute <id>
        e = ok(send(api, "POST", f"/transfers/{tid}/executions",
                    '{"execution": {"shutdown_instances": false, "auto_deploy": false}}'), "execution")
        assert api.wait_execution(tid, e["id"], 120)["status"] == "COMPLETED"
        # coriolis transfer execution list <id> --limit 5 --sort created_at:desc,number --status COMPLETED
        listed = ok(send(api, "GET", f"/transfers/{tid}/executions?limit=5&sort_key=created_at&sort_key=number"
                                     "&sort_dir=desc&sort_dir=desc&status=COMPLETED"), "executions")
        assert [x["id"] for x in listed] == [e["id"]]
        # coriolis transfer list --limit 10 --sort created_at:asc --status COMPLETED
        listed = ok(send(api, "GET", "/transfers?limit=10&sort_key=created_at&sort_dir=asc&status=COMPLETED"),
                    "transfers")
        assert [x["id"] for x in listed] == [tid]
        # coriolis transfer show <id> [--show-instances-data]: 1.2.4 reads `info` without include_task_info
        shown = ok(send(api, "GET", f"/transfers/{tid}"), "transfer")
        assert shown["info"]["vm-a"]["volumes_info"][0]["replica_state"]["trusted"] is True
        # coriolis transfer execution show <id> <execution>
        assert ok(send(api, "GET", f"/transfers/{tid}/executions/{e['id']}"), "execution")["tasks"]

        # coriolis transfer update <id> --notes "dr copy" --destination-environment '{"verify_boot": false}'
        #   --network-map '{"VM Network": "br1"}' --dont-clone-disks
        u = ok(send(api, "PUT", f"/transfers/{tid}", (
            '{"transfer": {"destination_environment": {"verify_boot": false}, "network_map": {"VM Network": "br1"}, '
            '"notes": "dr copy", "user_scripts": {"global": {}, "instances": {}}, "clone_disks": false}}')),
            "execution")
        assert u["type"] == "transfer_update" and u["status"] == "COMPLETED"
        shown = ok(send(api, "GET", f"/transfers/{tid}"), "transfer")
        assert shown["notes"] == "dr copy" and shown["clone_disks"] is False
        assert shown["network_map"] == {"VM Network": "br1"}

        # coriolis transfer update <id> --user-script-global linux=/path/to/script.sh (the file's content)
        script = "#!/bin/sh\necho migrated > /etc/motd\n"
        ok(send(api, "PUT", f"/transfers/{tid}",
                json.dumps({"transfer": {"user_scripts": {"global": {"linux": script}, "instances": {}}}})),
           "execution")

        # coriolis transfer schedule create <id> -M 15 -H 2 --expires-at "2099-01-01 00:00" --disabled
        s = ok(send(api, "POST", f"/transfers/{tid}/schedules", (
            '{"schedule": {"minute": 15, "hour": 2}, "enabled": false, "shutdown_instance": false, '
            '"auto_deploy": false, "expiration_date": "2099-01-01T00:00:00Z"}')), "schedule")
        assert s["expiration_date"] == "2099-01-01T00:00:00.000000" and s["enabled"] is False
        # coriolis transfer schedule list <id> --hide-expired
        listed = ok(send(api, "GET", f"/transfers/{tid}/schedules?show_expired=False"), "schedules")
        assert [x["id"] for x in listed] == [s["id"]]
        # coriolis transfer schedule update <id> <schedule> -M 30 --enabled --no-expiration-date: unwrapped
        s = ok(send(api, "PUT", f"/transfers/{tid}/schedules/{s['id']}", (
            '{"schedule": {"minute": 30}, "expiration_date": null, "shutdown_instance": false, "enabled": true, '
            '"auto_deploy": false}')), "schedule")
        assert s["schedule"] == {"minute": 30} and s["expiration_date"] is None and s["enabled"] is True
        assert ok(send(api, "GET", f"/transfers/{tid}/schedules/{s['id']}"), "schedule")["enabled"] is True
        assert send(api, "DELETE", f"/transfers/{tid}/schedules/{s['id']}").status_code == 204

        # coriolis deployment create <id> --dont-clone-disks --skip-os-morphing
        d = ok(send(api, "POST", "/deployments", (
            '{"deployment": {"transfer_id": "TRANSFER", "clone_disks": false, "force": false, '
            '"skip_os_morphing": true, "user_scripts": {"global": {}, "instances": {}}}}').replace("TRANSFER", tid)),
            "deployment")
        assert d["clone_disks"] is False and d["skip_os_morphing"] is True and d["transfer_id"] == tid
        # The client's empty script sections override nothing: the transfer's script is deployed.
        assert d["user_scripts"]["global"] == {"linux": script}
        assert api.wait_deployment(d["id"], 300)["last_execution_status"] == "COMPLETED"
        # coriolis deployment list --limit 5 --sort created_at --status COMPLETED
        listed = ok(send(api, "GET", "/deployments?limit=5&sort_key=created_at&sort_dir=desc&status=COMPLETED"),
                    "deployments")
        assert [x["id"] for x in listed] == [d["id"]]
        # coriolis deployment show <id> [--show-instances-data]: `info` read without include_task_info
        shown = ok(send(api, "GET", f"/deployments/{d['id']}"), "deployment")
        assert "vm-a" in shown["info"] and shown["transfer_result"]["vm-a"]
        # coriolis deployment cancel <id> (finished): a Coriolis 400 that names the deployment
        message = refused(send(api, "POST", f"/deployments/{d['id']}/actions", '{"cancel": {"force": false}}'), 400)
        assert d["id"] in message and "nothing to cancel" in message
        assert send(api, "DELETE", f"/deployments/{d['id']}").status_code == 204

        # coriolis transfer execution cancel <id> <execution> --force (finished)
        refused(send(api, "POST", f"/transfers/{tid}/executions/{e['id']}/actions", '{"cancel": {"force": true}}'),
                400)
        assert send(api, "DELETE", f"/transfers/{tid}/executions/{e['id']}").status_code == 204
        # coriolis transfer disks delete <id>; coriolis transfer delete <id>
        removed = ok(send(api, "POST", f"/transfers/{tid}/actions", '{"delete-disks": null}'), "execution")
        assert removed["type"] == "transfer_disks_delete"
        assert send(api, "DELETE", f"/transfers/{tid}").status_code == 204
        assert tid not in [x["id"] for x in ok(send(api, "GET", "/transfers"), "transfers")]


def test_replica_and_migration_commands_of_the_1_0_client(stack: RunningStack) -> None:
    """python-coriolisclient 1.0.9 (before transfers): `replica ...` and `migration deploy replica`."""
    src, dst = inventories(stack, ["vm-a"], data_mib=2)
    with stack.client() as api:
        origin, dest = endpoints(api, src, dst)
        # coriolis replica create --origin-endpoint src --destination-endpoint dst --instance vm-a
        #   --destination-environment '{"verify_boot": false}' --source-environment '{"bandwidth_limit": 1073741824}'
        #   --network-map '{"VM Network": "br0"}'
        r = ok(send(api, "POST", "/replicas", (
            '{"replica": {"origin_endpoint_id": "ORIGIN", "destination_endpoint_id": "DEST", '
            '"destination_environment": {"verify_boot": false}, "instances": ["vm-a"], '
            '"network_map": {"VM Network": "br0"}, "notes": null, "storage_mappings": {}, '
            '"user_scripts": {"global": {}, "instances": {}}, "source_environment": {"bandwidth_limit": 1073741824}}}'
        ).replace("ORIGIN", origin).replace("DEST", dest)), "replica")
        rid = r["id"]
        # coriolis replica execute <id>
        e = ok(send(api, "POST", f"/replicas/{rid}/executions", '{"execution": {"shutdown_instances": false}}'),
               "execution")
        assert api.wait_execution(rid, e["id"], 120)["status"] == "COMPLETED"
        # coriolis replica schedule create <id> -M 10
        s = ok(send(api, "POST", f"/replicas/{rid}/schedules",
                    '{"schedule": {"minute": 10}, "enabled": true, "shutdown_instance": false}'), "schedule")
        assert s["schedule"] == {"minute": 10} and s["auto_deploy"] is False
        assert send(api, "DELETE", f"/replicas/{rid}/schedules/{s['id']}").status_code == 204

        # coriolis migration deploy replica <id> --skip-os-morphing: a deployment, seen as a migration
        m = ok(send(api, "POST", "/migrations", (
            '{"migration": {"replica_id": "RID", "clone_disks": true, "force": false, "skip_os_morphing": true, '
            '"user_scripts": {"global": {}, "instances": {}}}}').replace("RID", rid)), "migration")
        assert m["replica_id"] == rid and m["type"] == "deployment"
        d = api.wait_deployment(m["id"], 300)
        assert d["last_execution_status"] == "COMPLETED", d
        # coriolis migration show|cancel|delete <id>
        shown = ok(send(api, "GET", f"/migrations/{m['id']}"), "migration")
        assert shown["last_execution_status"] == "COMPLETED" and shown["tasks"] and "info" in shown
        message = refused(send(api, "POST", f"/migrations/{m['id']}/actions", '{"cancel": {"force": false}}'), 400)
        assert m["id"] in message
        assert send(api, "DELETE", f"/migrations/{m['id']}").status_code == 204
        assert send(api, "GET", f"/migrations/{m['id']}").status_code == 404
        assert m["id"] not in [x["id"] for x in api.list_deployments()]
