"""The API reference's samples are a real run: every operation, called on the test stack (issue 18).

One scenario drives the real API (record DB, Temporal, worker) through every operation of the OpenAPI
document: endpoints, a migration and two cancelled ones, a transfer with executions, schedules, a
deployment, the same again through the ``/replicas`` alias, and the service routes. Each call's
request and answer is recorded. The test fails when an operation of the document has no sample, when
a request's body or query breaks the document, when an answer's status or body is not one the document
declares (an error is the Coriolis error body), or when the committed ``docs/api-samples.json`` (what
``make docs`` renders) no longer matches what the API answers: another status, or other fields.
``STERNA_WRITE_API_SAMPLES=1`` rewrites the file from the run instead, so the docs are refreshed by
running this test, never by hand.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jsonschema
import pytest

from api import openapi
from api.app import ROUTES
from tests.conftest import FINAL, RunningStack, wait_for
from tests.helpers import inventories

pytestmark = pytest.mark.slow

SAMPLES = Path(__file__).resolve().parents[2] / "docs" / "api-samples.json"
PROJECT = "4f3e2d1c0b0a49f8a7e6d5c4b3a29180"
# The run's temporary folder, as the docs show it: where an operator would keep the inventories.
SHOWN_ROOT = "/srv/sterna"
P = "/v1/{project_id}"


class Recorder:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)
        self.records: dict[str, dict[str, Any]] = {}

    def __call__(self, method: str, template: str, body: Any = None, query: dict[str, Any] | None = None,
                 expect: int | None = None, **ids: str) -> httpx.Response:
        path = template.format(project_id=PROJECT, **ids)
        kwargs: dict[str, Any] = {"params": query}
        if body is not None or method in ("POST", "PUT"):
            kwargs["json"] = body
        response = self.http.request(method, path, **kwargs)
        assert response.status_code < 500, (method, path, response.text)
        if expect is not None:
            assert response.status_code == expect, (method, path, response.status_code, response.text)
        if response.status_code == 204 or not response.content:
            answer: Any = None
        elif response.headers["content-type"].startswith("application/json"):
            answer = response.json()
        else:
            answer = response.text
        op = f"{method.lower()}:{template}"
        record = {"request": {"method": method, "path": response.request.url.raw_path.decode(), "body": body},
                  "response": {"status": response.status_code, "body": answer}}
        held = self.records.get(op)
        # The first success is the sample; an error is kept only where the run has nothing better.
        if held is None or (held["response"]["status"] >= 400 > response.status_code):
            self.records[op] = record
        return response

    def peek(self, path: str) -> Any:
        """An unrecorded read, to wait for a workflow."""
        return self.http.get(path.format(project_id=PROJECT)).json()


def _scenario(rec: Recorder, src: Path, dst: Path) -> None:
    rec("GET", "/")
    rec("GET", "/healthz", expect=200)
    rec("GET", "/readyz", expect=200)
    rec("GET", "/openapi.json", expect=200)
    rec("GET", f"{P}/providers", expect=200)
    rec("GET", f"{P}/providers/{{platform}}/schemas/{{provider_type}}", platform="local", provider_type="16",
        expect=200)

    # Endpoints.
    origin = rec("POST", f"{P}/endpoints", {"endpoint": {
        "name": "lab-source", "type": "local", "description": "VM images on the lab NAS",
        "connection_info": {"path": str(src)}}}, expect=200).json()["endpoint"]["id"]
    dest = rec("POST", f"{P}/endpoints", {"endpoint": {
        "name": "lab-destination", "type": "local", "connection_info": {"path": str(dst)}}},
        expect=200).json()["endpoint"]["id"]
    scratch = rec("POST", f"{P}/endpoints", {"endpoint": {
        "name": "scratch", "type": "local", "connection_info": {"path": str(dst)}}},
        expect=200).json()["endpoint"]["id"]
    rec("GET", f"{P}/endpoints", expect=200)
    rec("GET", f"{P}/endpoints/{{id}}", id=origin, expect=200)
    rec("PUT", f"{P}/endpoints/{{id}}", {"endpoint": {"description": "VM images on the lab NAS (read-only)"}},
        id=origin, expect=200)
    rec("POST", f"{P}/endpoints/{{id}}/actions", {"validate-connection": None}, id=origin, expect=200)
    instances = rec("GET", f"{P}/endpoints/{{id}}/instances", id=origin, expect=200).json()["instances"]
    vm = base64.urlsafe_b64encode(instances[0]["id"].encode()).decode().rstrip("=")
    rec("GET", f"{P}/endpoints/{{id}}/instances/{{instance_id}}", id=origin, instance_id=vm, expect=200)
    for what in ("networks", "storage", "destination-options"):
        rec("GET", f"{P}/endpoints/{{id}}/{what}", id=dest, expect=200)
    # ``local`` has no source options: the sample shows the refusal a provider without them gives.
    rec("GET", f"{P}/endpoints/{{id}}/source-options", id=origin, expect=400)
    rec("DELETE", f"{P}/endpoints/{{id}}", id=scratch, expect=204)

    # Migrations: one completes; two slow ones are cancelled, through ``/actions`` and the ``/action`` alias.
    migration = rec("POST", f"{P}/migrations", {"migration": {
        "origin_endpoint_id": origin, "destination_endpoint_id": dest, "instances": ["vm-a"],
        "skip_os_morphing": True, "notes": "first wave"}}, expect=200).json()["migration"]["id"]
    slow = {"source_environment": {"bandwidth_limit": 1024 * 1024}}
    cancelled = [rec("POST", f"{P}/migrations", {"migration": {
        "origin_endpoint_id": origin, "destination_endpoint_id": dest, "instances": [vm_], "skip_os_morphing": True,
        **slow}}).json()["migration"]["id"] for vm_ in ("vm-b", "vm-c")]
    for mid, action, args in zip(cancelled, ("actions", "action"), (None, {"force": False}), strict=True):
        _wait_migration(rec, mid, _copying)
        rec("POST", f"{P}/migrations/{{id}}/{action}", {"cancel": args}, id=mid, expect=204)
    for mid in (migration, *cancelled):
        _wait_migration(rec, mid, lambda m: m["last_execution_status"] in FINAL)
    rec("GET", f"{P}/migrations", query={"limit": 1}, expect=200)
    rec("GET", f"{P}/migrations/detail", query={"limit": 1}, expect=200)
    rec("GET", f"{P}/migrations/{{id}}", id=migration, expect=200)
    rec("DELETE", f"{P}/migrations/{{id}}", id=cancelled[0], expect=204)

    for base, key in (("transfers", "transfer"), ("replicas", "replica")):
        _transfer_scenario(rec, f"{P}/{base}", key, origin, dest)

    rec("GET", "/metrics", expect=200)


def _copying(body: dict[str, Any]) -> bool:
    """A disk copy under way: a cancel now stops a running step (before it, the workflow may not exist)."""
    return any(t["task_type"] == "REPLICATE_DISKS" and t["status"] == "RUNNING" for t in body["tasks"])


def _wait_migration(rec: Recorder, migration: str, done: Callable[[dict[str, Any]], bool]) -> None:
    wait_for(lambda: done(rec.peek(f"{P}/migrations/{migration}")["migration"]), 300, 0.1, f"migration {migration}")


def _wait_execution(rec: Recorder, base: str, transfer: str, execution: str) -> None:
    wait_for(lambda: rec.peek(f"{base}/{transfer}/executions/{execution}")["execution"]["status"] in FINAL,
             300, 0.3, f"execution {execution}")


def _transfer_scenario(rec: Recorder, base: str, key: str, origin: str, dest: str) -> None:
    """A transfer's life, through ``/transfers`` or the old ``/replicas`` alias (``key`` wraps the body)."""
    vm = "vm-d" if key == "transfer" else "vm-e"
    transfer = rec("POST", base, {key: {
        "origin_endpoint_id": origin, "destination_endpoint_id": dest, "instances": [vm],
        "scenario": "replica", "skip_os_morphing": True, "notes": "nightly sync",
        "source_environment": {"bandwidth_limit": 1024 * 1024}}}, expect=200).json()[key]["id"]
    # A first execution, cancelled while it copies (1 MiB/s); the second syncs the replica in full.
    second = rec("POST", f"{base}/{{transfer_id}}/executions", {"execution": {"shutdown_instances": False}},
                 transfer_id=transfer, expect=200).json()["execution"]["id"]
    wait_for(lambda: _copying(rec.peek(f"{base}/{transfer}/executions/{second}")["execution"]), 120, 0.1,
             f"execution {second} copying")
    rec("POST", f"{base}/{{transfer_id}}/executions/{{id}}/actions", {"cancel": None}, transfer_id=transfer,
        id=second, expect=204)
    _wait_execution(rec, base, transfer, second)
    execution = rec("POST", f"{base}/{{transfer_id}}/executions", {"execution": {}}, transfer_id=transfer,
                    expect=200).json()["execution"]["id"]
    _wait_execution(rec, base, transfer, execution)
    rec("GET", f"{base}/{{transfer_id}}/executions", transfer_id=transfer, expect=200)
    rec("GET", f"{base}/{{transfer_id}}/executions/detail", transfer_id=transfer, expect=200)
    rec("GET", f"{base}/{{transfer_id}}/executions/{{id}}", transfer_id=transfer, id=execution, expect=200)
    rec("DELETE", f"{base}/{{transfer_id}}/executions/{{id}}", transfer_id=transfer, id=second, expect=204)

    schedule = rec("POST", f"{base}/{{transfer_id}}/schedules", {
        "schedule": {"minute": 0, "hour": 3}, "enabled": True, "expiration_date": "2099-01-01T00:00:00Z",
        "shutdown_instance": False, "auto_deploy": False}, transfer_id=transfer, expect=200).json()["schedule"]["id"]
    rec("GET", f"{base}/{{transfer_id}}/schedules", transfer_id=transfer, expect=200)
    rec("GET", f"{base}/{{transfer_id}}/schedules/{{id}}", transfer_id=transfer, id=schedule, expect=200)
    rec("PUT", f"{base}/{{transfer_id}}/schedules/{{id}}", {"enabled": False}, transfer_id=transfer, id=schedule,
        expect=200)
    rec("DELETE", f"{base}/{{transfer_id}}/schedules/{{id}}", transfer_id=transfer, id=schedule, expect=204)

    rec("GET", base, query={"include_task_info": "true", "sort_key": "created_at", "sort_dir": "asc"}, expect=200)
    rec("GET", f"{base}/detail", expect=200)
    rec("GET", f"{base}/{{id}}", id=transfer, expect=200)
    update = rec("PUT", f"{base}/{{id}}", {key: {"notes": "nightly sync, 03:00"}}, id=transfer,
                 expect=200).json()["execution"]["id"]
    _wait_execution(rec, base, transfer, update)

    if key == "transfer":
        deployment = rec("POST", f"{P}/deployments", {"deployment": {
            "transfer_id": transfer, "clone_disks": True, "skip_os_morphing": True}},
            expect=200).json()["deployment"]["id"]
        wait_for(lambda: rec.peek(f"{P}/deployments/{deployment}")["deployment"]["last_execution_status"] in FINAL,
                 300, 0.3, f"deployment {deployment}")
        rec("GET", f"{P}/deployments", expect=200)
        rec("GET", f"{P}/deployments/detail", expect=200)
        rec("GET", f"{P}/deployments/{{id}}", id=deployment, expect=200)
        # It has completed: a cancel is refused, in the Coriolis error format.
        rec("POST", f"{P}/deployments/{{id}}/actions", {"cancel": None}, id=deployment, expect=400)
        rec("DELETE", f"{P}/deployments/{{id}}", id=deployment, expect=204)

    removal = rec("POST", f"{base}/{{id}}/actions", {"delete-disks": None}, id=transfer,
                  expect=200).json()["execution"]["id"]
    _wait_execution(rec, base, transfer, removal)
    rec("DELETE", f"{base}/{{id}}", id=transfer, expect=204)


def _abridge(records: dict[str, dict[str, Any]]) -> None:
    """The two answers too long for a page: the document itself, and the metrics."""
    doc = records["get:/openapi.json"]
    body = doc["response"]["body"]
    doc["response"]["body"] = {"openapi": body["openapi"], "info": body["info"],
                               "paths": f"... ({len(body['paths'])} paths)",
                               "components": f"... ({len(body['components']['schemas'])} schemas)"}
    doc["abridged"] = "Abridged: the whole document is what this page is generated from."
    metrics = records["get:/metrics"]
    lines = metrics["response"]["body"].splitlines()
    kept = [x for x in lines if re.match(r"(# (HELP|TYPE) )?sterna_api_requests_total\b", x)]
    metrics["response"]["body"] = "\n".join(kept[:12])
    metrics["abridged"] = "Abridged: the first series of sterna_api_requests_total only."


def _shape(body: Any) -> Any:
    """What the docs promise about an answer: its fields, two levels down (values vary run to run)."""
    if isinstance(body, dict):
        return {k: sorted(v) if isinstance(v, dict) else type(v).__name__ for k, v in body.items()}
    return type(body).__name__


def _validate(doc: dict[str, Any], schema: dict[str, Any], value: Any) -> None:
    jsonschema.validate(value, {**schema, "components": doc["components"]})


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_every_operation_has_a_sample_from_a_real_run(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a", "vm-b", "vm-c", "vm-d", "vm-e"], data_mib=4)
    rec = Recorder(stack.url)
    with rec.http:
        _scenario(rec, src, dst)
    doc = openapi.document(ROUTES)
    operations = {op["operationId"]: op for ops in doc["paths"].values() for op in ops.values()}
    assert set(rec.records) == set(operations), set(operations) ^ set(rec.records)
    for op_id, record in rec.records.items():
        op, request, response = operations[op_id], record["request"], record["response"]
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
        assert set(parse_qs(urlsplit(request["path"]).query)) <= declared, (op_id, request["path"])
        if request["body"] is not None:
            _validate(doc, op["requestBody"]["content"]["application/json"]["schema"], request["body"])
        # Every answer is one the document declares, and its body is what the document says.
        status = str(response["status"])
        declared_as = op["responses"].get(status) or op["responses"].get(f"{status[0]}XX")
        assert declared_as is not None, (op_id, status)
        schema = declared_as.get("content", {}).get("application/json", {}).get("schema")
        if schema is not None:
            _validate(doc, schema, response["body"])
        else:
            assert response["body"] is None or op_id == "get:/metrics", (op_id, response["body"])
    _abridge(rec.records)
    error = next(r["response"]["body"] for r in rec.records.values() if r["response"]["status"] >= 400)
    text = json.dumps({"recorded": "tests/api/test_api_samples.py, local provider, SQLite record DB",
                       "error_example": error, "operations": dict(sorted(rec.records.items()))}, indent=1)
    recorded = json.loads(text.replace(str(stack.root), SHOWN_ROOT))
    if os.environ.get("STERNA_WRITE_API_SAMPLES") == "1":
        SAMPLES.write_text(json.dumps(recorded, indent=1) + "\n")
        return
    committed = json.loads(SAMPLES.read_text())["operations"]
    hint = ("the docs' samples are stale: rerun this test with STERNA_WRITE_API_SAMPLES=1 and commit "
            "docs/api-samples.json")
    assert set(committed) == set(recorded["operations"]), hint
    for op_id, record in recorded["operations"].items():
        ours, theirs = record["response"], committed[op_id]["response"]
        assert (ours["status"], _shape(ours["body"])) == (theirs["status"], _shape(theirs["body"])), (op_id, hint)
