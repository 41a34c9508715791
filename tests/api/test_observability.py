"""Health, readiness, request ids, structured logs and Prometheus metrics (issue 18).

The first tests run an API process of its own against a Temporal address where nothing listens: that
is "Temporal is down" for real, without stopping the shared stack's server. The others run one
migration on the real stack and read what the API and the worker exposed about it; the last ones
run an API and a worker of their own from start to SIGTERM, tracing on, and read all they left.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.launcher import wait_port
from tests.conftest import RunningStack, wait_final, wait_for
from tests.helpers import identical, inventories, own_api_and_worker
from tests.leftovers import migration_workflows
from tests.peers import free_port


@pytest.fixture(scope="module")
def api_without_temporal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    root: Path = tmp_path_factory.mktemp("api-alone")
    port = free_port()
    env = {**os.environ, "STERNA_DATA_DIR": str(root), "STERNA_DATABASE_URL": f"sqlite:///{root / 'sterna.db'}",
           "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}", "STERNA_API_HOST": "127.0.0.1",
           "STERNA_API_PORT": str(port)}
    with open(root / "api.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "client.cli", "api"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        wait_port("127.0.0.1", port, 60, proc, "api")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_healthz_answers_and_readyz_refuses_while_temporal_is_down(api_without_temporal: httpx.Client) -> None:
    assert api_without_temporal.get("/healthz").json() == {"status": "ok"}
    ready = api_without_temporal.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["temporal"].startswith("unavailable")


def test_every_response_carries_a_request_id(api_without_temporal: httpx.Client) -> None:
    mine = "trace-" + uuid.uuid4().hex
    assert api_without_temporal.get("/healthz", headers={"X-Request-Id": mine}).headers["x-request-id"] == mine
    generated = {api_without_temporal.get("/healthz").headers["x-request-id"] for _ in range(2)}
    assert len(generated) == 2, "each request gets its own id"
    # Answers that never reach a handler: the limits' 400, the router's 404; and a 503.
    for response in (api_without_temporal.get("/v1/p/migrations?limit=-1"),
                     api_without_temporal.get("/nowhere"), api_without_temporal.get("/readyz")):
        assert response.status_code in (400, 404, 503)
        assert response.headers["x-request-id"].startswith("req-")
    # A header that is not an id (too long, or not printable) is replaced, not echoed.
    assert api_without_temporal.get("/healthz", headers={"X-Request-Id": "x" * 500}).headers[
        "x-request-id"].startswith("req-")


def test_api_metrics_count_requests_by_route_and_status(api_without_temporal: httpx.Client) -> None:
    def count(text: str, route: str, status: str) -> float:
        pattern = rf'^sterna_api_requests_total{{method="GET",route="{re.escape(route)}",status="{status}"}} (\S+)$'
        found = re.search(pattern, text, re.M)
        return float(found.group(1)) if found else 0.0

    before = api_without_temporal.get("/metrics").text
    api_without_temporal.get("/healthz")
    api_without_temporal.get("/readyz")
    api_without_temporal.get("/v1/p/migrations/does-not-exist")
    after = api_without_temporal.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    assert count(text, "/readyz", "503") == count(before, "/readyz", "503") + 1
    # Route templates, not paths: a migration id does not make its own series.
    assert "does-not-exist" not in text
    assert re.search(r'^sterna_api_errors_total\{method="GET",route="/readyz"\} [1-9]', text, re.M)
    assert count(text, "/healthz", "200") == count(before, "/healthz", "200") + 1
    assert re.search(r'^sterna_api_request_duration_seconds_count\{method="GET",route="/healthz"\} [1-9]', text, re.M)


@pytest.fixture(scope="module")
def migrated(stack: RunningStack) -> dict[str, Any]:
    """One migration whose endpoints hold a secret value, and the request id it was created with."""
    secret = "s3cret-" + uuid.uuid4().hex
    request_id = "test-" + uuid.uuid4().hex
    src, dst = inventories(stack, ["vm-a"])
    with stack.client() as api:
        origin = api.create_endpoint(f"src-{src.name}", "local", {"path": str(src), "password": secret})["id"]
        dest = api.create_endpoint(f"dst-{dst.name}", "local", {"path": str(dst), "api_key": secret})["id"]
        created = httpx.post(f"{stack.url}/v1/test-project/migrations", headers={"X-Request-Id": request_id},
                             json={"migration": {"origin_endpoint_id": origin, "destination_endpoint_id": dest,
                                                 "instances": ["vm-a"], "skip_os_morphing": True}})
        assert created.status_code == 200, created.text
        assert created.headers["x-request-id"] == request_id
        final = wait_final(api, created.json()["migration"]["id"])
    assert final["last_execution_status"] == "COMPLETED"
    assert identical(src / "vm-a" / "disk-0.raw", dst / "vm-a" / "disk-0.qcow2")
    return {"secret": secret, "request_id": request_id, "migration": final}


def _lines(stack: RunningStack, name: str) -> list[dict[str, Any]]:
    text = (stack.stack.log_dir / f"{name}.log").read_text()
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_worker_metrics_count_bytes_moved_after_a_migration(stack: RunningStack, migrated: dict[str, Any]) -> None:
    assert httpx.get(f"{stack.url}/readyz").json()["checks"] == {"database": "ok", "temporal": "ok"}
    ours = httpx.get(f"http://{stack.settings.worker_metrics_address}/metrics").text
    moved = re.findall(r'^sterna_bytes_moved_total\{provider="local",task_type="REPLICATE_DISKS"\} (\S+)$', ours,
                       re.M)
    assert moved and float(moved[0]) >= 16 * 1024**2, "the 16 MiB of the sample VM's data were exported"
    # The disk copy's activity (the one-shot export, or the replication on transfers) timed its attempt.
    assert re.search(r'^sterna_step_duration_seconds_count\{activity="(export|replicate)_disk",outcome="ok",'
                     r'provider="local",task_type="REPLICATE_DISKS"\} [1-9]', ours, re.M), ours

    def active() -> str:
        now = httpx.get(f"http://{stack.settings.worker_metrics_address}/metrics").text
        found = re.search(r'^sterna_active_transfers\{task_type="REPLICATE_DISKS"\} (\S+)$', now, re.M)
        assert found, "the gauge has a series for the task type that ran"
        return found.group(1)

    # The stack is shared: another test's cancelled transfer may still be winding down on this worker.
    wait_for(lambda: active() == "0.0", 120, 0.5, "no transfer running on the worker")
    sdk = httpx.get(f"http://{stack.settings.temporal_metrics_address}/metrics").text
    assert re.search(r"^temporal_activity_execution_latency\w*\{", sdk, re.M), sdk[:2000]


@pytest.mark.slow
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_logs_are_structured_carry_ids_and_no_secret(stack: RunningStack, migrated: dict[str, Any]) -> None:
    secret, migration_id = migrated["secret"], migrated["migration"]["id"]
    assert secret not in (stack.stack.log_dir / "temporal.log").read_text()
    for name in ("api", "worker"):
        text = (stack.stack.log_dir / f"{name}.log").read_text()
        assert secret not in text, f"{name}.log holds an endpoint's secret"
        for line in text.splitlines():
            assert line.startswith("{") and json.loads(line)["msg"] is not None, f"{name}.log: {line!r}"
    # Every line, the stack's start-up included, says which process wrote it and on which host.
    for name in ("api", "worker"):
        for entry in _lines(stack, name):
            assert entry["service"] == name and entry["host_id"] == stack.settings.worker_host_id, entry
            assert entry["process_id"].startswith(f"{name}-"), entry
    api_lines = _lines(stack, "api")
    create = [x for x in api_lines if x.get("request_id") == migrated["request_id"]]
    assert create and create[-1]["route"] == "/v1/{project_id}/migrations" and create[-1]["status"] == 200
    assert all("request_id" in x for x in api_lines if x["logger"] == "sterna.api.access")
    # Its workflows: its own and all it started (a transfer's execution starts a deployment).
    workflows = {w.id for w in migration_workflows(stack, migration_id)}
    worker_lines = [x for x in _lines(stack, "worker") if migration_id in json.dumps(x)]
    assert worker_lines, "the worker logged the migration's steps"
    for entry in worker_lines:
        assert entry.get("workflow_id") in workflows, (entry, workflows)
        assert entry.get("activity_id") or entry.get("workflow_type"), entry


@pytest.mark.slow
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
async def test_workflows_and_activities_carry_summaries_for_the_temporal_ui(stack: RunningStack,
                                                                         migrated: dict[str, Any]) -> None:
    from temporalio.client import Client
    from temporalio.converter import default

    client = await Client.connect(stack.settings.temporal_address)
    migration = migrated["migration"]
    root = f"migration-{migration['id']}"
    runs = await asyncio.to_thread(migration_workflows, stack, migration["id"])
    summaries, shown = [], {}
    for run in runs:
        handle = client.get_workflow_handle(run.id, run_id=run.run_id)
        shown[run.id] = await (await handle.describe()).static_summary()
        async for event in handle.fetch_history_events():
            if event.HasField("activity_task_scheduled_event_attributes") and event.user_metadata.HasField("summary"):
                summaries.append(default().payload_converter.from_payload(event.user_metadata.summary, str))
    assert "vm-a: REPLICATE_DISKS disk-0" in summaries, summaries
    # The workflows too: the migration says what it moves, every other workflow of it names its VM
    # or what it does ("vm-a: migration"; on transfers "vm-a: transfer execution", the deployment, ...).
    assert shown.pop(root) == "migration of vm-a: local -> local"
    assert shown and all(text for text in shown.values()), shown
    # Each step of the migration, as its tasks name them: the first, the snapshot and the last.
    steps = (["VALIDATE_TRANSFER_SOURCE_INPUTS", "DEPLOY_TRANSFER_SOURCE_RESOURCES", "DELETE_TRANSFER_SOURCE_RESOURCES",
              "DELETE_TRANSFER_TARGET_DISK_SNAPSHOTS"] if migration["transfer_id"] else
             ["VALIDATE_MIGRATION_INPUTS", "CREATE_SOURCE_SNAPSHOT", "CLEANUP_MIGRATION_RESOURCES"])
    assert {f"vm-a: {step}" for step in steps} <= set(summaries), summaries


class _Collector(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver: the (service, span name) pairs the exporters delivered."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.spans: list[tuple[str, str]] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}/v1/traces"


class _Receive(BaseHTTPRequestHandler):
    server: _Collector

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        for spans in request.resource_spans:
            service = next(a.value.string_value for a in spans.resource.attributes if a.key == "service.name")
            self.server.spans += [(service, s.name) for scope in spans.scope_spans for s in scope.spans]
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def stopped_run(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An API and a worker of their own, tracing to a collector, from start to SIGTERM: two endpoint
    validations (one fails) with a secret in each endpoint, then the logs and spans they left."""
    root = tmp_path_factory.mktemp("own-run")
    secret, request_id = "s3cret-" + uuid.uuid4().hex, "own-" + uuid.uuid4().hex
    src, _ = inventories(stack, [])
    collector = _Collector()
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    try:
        # Batches leave every 10 minutes: the spans can only reach the collector through the flush at shutdown.
        with own_api_and_worker(stack, root, STERNA_OTLP_TRACES_ENDPOINT=collector.url,
                                OTEL_BSP_SCHEDULE_DELAY="600000") as own, \
                httpx.Client(base_url=f"http://127.0.0.1:{own.settings.api_port}/v1/own-run", timeout=120) as http:
            checked = {}
            for name, info in (("good", {"path": str(src), "password": secret}),
                               ("missing", {"path": str(src / "missing"), "api_key": secret})):
                created = http.post("/endpoints", json={"endpoint": {"name": f"{name}-{src.name}", "type": "local",
                                                                     "connection_info": info}})
                assert created.status_code == 200, created.text
                answer = http.post(f"/endpoints/{created.json()['endpoint']['id']}/actions",
                                   json={"validate-connection": None}, headers={"X-Request-Id": request_id})
                assert answer.status_code == 200, answer.text
                checked[name] = answer.json()["validate-connection"]["valid"]
            assert checked == {"good": True, "missing": False}
        # Both stopped by themselves on SIGTERM, not killed after the grace period (-9). uvicorn, once shut
        # down, raises the SIGTERM it caught again: the API dies of it, past any atexit handler (which is
        # why OpenTelemetry's own flush at exit never ran there).
        assert {name: proc.returncode for name, proc in own.procs.items()} == {"api": -signal.SIGTERM, "worker": 0}
    finally:
        collector.shutdown()
        collector.server_close()
    logs = {name: (root / "logs" / f"{name}.log").read_text() for name in ("api", "worker")}
    return {"secret": secret, "request_id": request_id, "host_id": own.settings.worker_host_id, "logs": logs,
            "spans": collector.spans}


@pytest.mark.slow
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_spans_still_batched_leave_at_shutdown(stopped_run: dict[str, Any]) -> None:
    """The API's flush is its lifespan's (it dies of the SIGTERM uvicorn re-raises); the worker exits
    normally, so OpenTelemetry's atexit flush would cover it too, and ours comes first."""
    spans = set(stopped_run["spans"])
    assert ("sterna-api", "StartWorkflow:EndpointCallWorkflow") in spans, spans
    assert ("sterna-worker", "RunWorkflow:EndpointCallWorkflow") in spans, spans


@pytest.mark.slow
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_every_line_from_start_up_to_shutdown_carries_ids_and_no_secret(stopped_run: dict[str, Any]) -> None:
    for name, text in stopped_run["logs"].items():
        assert stopped_run["secret"] not in text, f"{name}.log holds an endpoint's secret"
        lines = text.splitlines()
        for line in lines:
            assert line.startswith("{"), f"{name}.log: {line!r}"
        entries = [json.loads(line) for line in lines]
        # One process wrote the file, and every line says which, on which host.
        assert {(e["service"], e["host_id"]) for e in entries} == {(name, stopped_run["host_id"])}
        assert len({e["process_id"] for e in entries}) == 1 and entries[0]["process_id"].startswith(f"{name}-")
        messages = [e["msg"] for e in entries]
        first, last = {"api": ("Application startup complete.", "Application shutdown complete."),
                       "worker": ("worker polling", "worker shutting down")}[name]
        assert any(m.startswith(first) for m in messages) and any(m.startswith(last) for m in messages), messages
    api = [json.loads(line) for line in stopped_run["logs"]["api"].splitlines()]
    access = [e for e in api if e["logger"] == "sterna.api.access"]
    assert access and all(e.get("request_id") for e in access)
    assert [e["route"] for e in access if e["request_id"] == stopped_run["request_id"]] == [
        "/v1/{project_id}/endpoints/{id}/actions"] * 2
    worker = [json.loads(line) for line in stopped_run["logs"]["worker"].splitlines()]
    for entry in worker:
        if "activity_id" in entry or "workflow_type" in entry:
            assert entry.get("workflow_id", "").startswith("endpoint-"), entry
