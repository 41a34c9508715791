"""Issue 11, reproducer 13: secret values in environments are stored and shown in plain text.

A migration, and a transfer with an execution and a deployment, run with secrets under several
key spellings (``pwd``, ``auth``, camelCase, nested in dicts and lists). Afterwards none of the
values is in the record DB, in the history of any of their workflows, in any API response or in
a log; the runs completed, so the activities resolved every reference they were given (that the
provider gets the values themselves is ``tests/store/test_environments.py``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from temporalio.client import WorkflowExecution

from store.models import Base
from tests.conftest import RunningStack, wait_final
from tests.helpers import endpoints, inventories
from tests.leftovers import migration_workflows

pytestmark = pytest.mark.slow


def _secrets() -> dict[str, str]:
    return {name: f"{name}-{uuid.uuid4().hex}" for name in
            ("pwd", "auth", "nested_password", "listed_token", "api_key", "auth_dict", "x_auth_token", "updated")}


def _environments(s: dict[str, str], plain: str) -> tuple[dict[str, Any], dict[str, Any]]:
    source = {"pwd": s["pwd"], "note": plain,
              "nested": {"deeper": {"adminPassword": s["nested_password"]}, "list": [{"token": s["listed_token"]}]}}
    destination = {"verify_boot": False, "api_key": s["api_key"], "auth": {"user": "u", "secret": s["auth_dict"]},
                   "X-Auth-Token": s["x_auth_token"], "opts": [{"auth": s["auth"]}]}
    return source, destination


@pytest.fixture(scope="module")
def ran(stack: RunningStack) -> dict[str, Any]:
    secrets, plain = _secrets(), f"plain-{uuid.uuid4().hex}"
    source, destination = _environments(secrets, plain)
    src, dst = inventories(stack, ["vm-a"], data_mib=2)
    with stack.client() as api:
        origin, dest = endpoints(api, src, dst)
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
                                 source_environment=source, destination_environment=destination)
        t = api.create_transfer(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
                                skip_os_morphing=True, source_environment=source,
                                destination_environment={**destination, "instance_name": "vm-a-deployed"})
        # A client that GETs and PUTs back sends "***" for the secrets: the stored values stay.
        shown = api.get_transfer(t["id"])["destination_environment"]
        api.update_transfer(t["id"], destination_environment={**shown, "client_secret": secrets["updated"]})
        e = api.execute_transfer(t["id"])
        assert api.wait_execution(t["id"], e["id"], 300)["status"] == "COMPLETED"
        d = api.wait_deployment(api.create_deployment(t["id"], skip_os_morphing=True)["id"], 300)
        assert d["last_execution_status"] == "COMPLETED", d
        assert wait_final(api, m["id"])["last_execution_status"] == "COMPLETED"
    assert (dst / "vm-a-deployed").is_dir(), "the deployment used the transfer's destination environment"
    return {"secrets": secrets, "plain": plain, "migration": m["id"], "transfer": t["id"], "execution": e["id"],
            "deployment": d["id"], "deployment_executions": [x["id"] for x in d["executions"]]}


def _found(haystack: str | bytes, secrets: dict[str, str]) -> list[str]:
    """The names of the secrets whose value is in ``haystack``."""
    data = haystack if isinstance(haystack, bytes) else haystack.encode()
    return [name for name, value in secrets.items() if value.encode() in data]


def test_not_in_the_record_db(stack: RunningStack, ran: dict[str, Any]) -> None:
    engine = create_engine(stack.settings.db_url)
    try:
        with engine.connect() as conn:
            # Each value on its own: a Row's repr shortens long strings.
            rows = " ".join(str(value) for table in Base.metadata.sorted_tables
                            for row in conn.execute(text(f"SELECT * FROM {table.name}")) for value in row)
    finally:
        engine.dispose()
    assert ran["plain"] in rows, "the check reads the environments"
    assert _found(rows, ran["secrets"]) == []
    if stack.backend == "sqlite":
        files = sorted(stack.root.glob("sterna.db*"))
        assert _found(b"".join(f.read_bytes() for f in files), ran["secrets"]) == [], files


async def _histories(stack: RunningStack, ids: list[str], runs: Sequence[WorkflowExecution] = ()) -> dict[str, bytes]:
    """The histories of the workflows whose id holds one of ``ids``, and of ``runs``."""
    from temporalio.client import Client

    client = await Client.connect(stack.settings.temporal_address, namespace=stack.settings.temporal_namespace)
    found = {(wf.id, wf.run_id) async for wf in client.list_workflows() if any(i in wf.id for i in ids)}
    found |= {(wf.id, wf.run_id) for wf in runs}
    out = {}
    for wid, run_id in found:
        handle = client.get_workflow_handle(wid, run_id=run_id)
        # Payloads are JSON bytes inside the protobuf events: a plain value would be there as it is.
        out[wid] = b"".join([e.SerializeToString() async for e in handle.fetch_history_events()])
    return out


def test_not_in_temporal_history(stack: RunningStack, ran: dict[str, Any]) -> None:
    ids = [ran["transfer"], ran["execution"], ran["deployment"], *ran["deployment_executions"]]
    # The migration's workflows: its own and all it started (instances; on transfers, the execution's
    # instances, its deployment and the deployment's instances).
    runs = migration_workflows(stack, ran["migration"])
    assert len(runs) >= 2, runs
    histories = asyncio.run(_histories(stack, ids, runs))
    # migration + its instance (at least), execution + its instance, deployment + its instance
    assert len(histories) >= 6, sorted(histories)
    assert all(ran["plain"].encode() in h for wid, h in histories.items() if "/vm-" in wid), \
        "the instance workflows carry the environments"
    leaks = {wid: _found(h, ran["secrets"]) for wid, h in histories.items()}
    assert {wid: names for wid, names in leaks.items() if names} == {}


def _responses(stack: RunningStack, ran: dict[str, Any]) -> dict[str, str]:
    v = f"{stack.url}/v1/test-project"
    t, e = ran["transfer"], ran["execution"]
    paths = [f"{v}/migrations", f"{v}/migrations/detail", f"{v}/migrations/{ran['migration']}",
             f"{v}/transfers", f"{v}/transfers/detail", f"{v}/transfers/detail?include_task_info=true",
             f"{v}/transfers/{t}", f"{v}/replicas/{t}", f"{v}/transfers/{t}/executions",
             f"{v}/transfers/{t}/executions/detail", f"{v}/transfers/{t}/executions/{e}",
             f"{v}/deployments", f"{v}/deployments/detail", f"{v}/deployments/{ran['deployment']}",
             f"{v}/migrations/{ran['deployment']}"]
    out = {}
    for path in paths:
        r = httpx.get(path, timeout=30)
        assert r.status_code == 200, (path, r.text)
        out[path] = r.text
    return out


def test_not_in_any_api_response_and_masked_at_any_depth(stack: RunningStack, ran: dict[str, Any]) -> None:
    responses = _responses(stack, ran)
    assert {path: _found(body, ran["secrets"]) for path, body in responses.items()
            if _found(body, ran["secrets"])} == {}
    with stack.client() as api:
        for env in (api.get_migration(ran["migration"])["source_environment"],
                    api.get_transfer(ran["transfer"])["source_environment"],
                    api.get_deployment(ran["deployment"])["source_environment"]):
            assert env["pwd"] == "***" and env["nested"]["deeper"]["adminPassword"] == "***"
            assert env["nested"]["list"] == [{"token": "***"}] and env["note"] == ran["plain"]
        dest = api.get_transfer(ran["transfer"])["destination_environment"]
        assert dest["opts"] == [{"auth": "***"}] and dest["auth"] == "***" and dest["client_secret"] == "***"
        assert dest["X-Auth-Token"] == "***" and dest["verify_boot"] is False


def test_not_in_the_logs(stack: RunningStack, ran: dict[str, Any]) -> None:
    for name in ("api", "worker", "temporal"):
        assert _found((stack.stack.log_dir / f"{name}.log").read_text(), ran["secrets"]) == [], name


def test_clients_may_not_send_secret_references(stack: RunningStack, ran: dict[str, Any]) -> None:
    with stack.client() as api:
        body = {"transfer": {"destination_environment": {"x": {"$sterna_secret": f"{ran['migration']}/guess"}}}}
        r = httpx.put(f"{stack.url}/v1/test-project/transfers/{ran['transfer']}", json=body, timeout=30)
        assert r.status_code == 400, r.text
        assert "$sterna_secret" in r.json()["error"]["message"]
        assert api.get_transfer(ran["transfer"])["destination_environment"].get("x") is None


def test_an_endpoint_calls_env_travels_encrypted(stack: RunningStack) -> None:
    """``GET …/endpoints/{id}/instances?env=`` runs as a workflow: its secrets must not be in that history."""
    import base64
    import json

    secret, plain = f"pw-{uuid.uuid4().hex}", f"plain-{uuid.uuid4().hex}"
    src, _ = inventories(stack, ["vm-a"], data_mib=1)
    raw = json.dumps({"password": secret, "note": plain, "nested": {"api_key": secret + "-2"}})
    with stack.client() as api:
        endpoint = api.create_endpoint(f"env-call-{uuid.uuid4().hex[:8]}", "local", {"path": str(src)})
        r = api.http.get(f"/endpoints/{endpoint['id']}/instances",
                         params={"env": base64.urlsafe_b64encode(raw.encode()).decode()})
        assert r.status_code == 200, r.text
        assert "vm-a" in r.text
        forged = json.dumps({"password": {"$sterna_secret": "inline:forged"}})
        refused = api.http.get(f"/endpoints/{endpoint['id']}/instances",
                               params={"env": base64.urlsafe_b64encode(forged.encode()).decode()})
        assert refused.status_code == 400, refused.text
    histories = asyncio.run(_histories(stack, [endpoint["id"]]))
    assert histories and any(plain.encode() in h for h in histories.values()), "the call's env is in its history"
    assert not [wid for wid, h in histories.items() if secret.encode() in h], "a secret is in plain text"
