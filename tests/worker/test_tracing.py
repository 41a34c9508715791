"""Optional OpenTelemetry tracing through the Temporal interceptor (issue 18): off by default; when on,
a workflow started through Sterna's client and run by a worker set up as Sterna's is exports one trace,
from the client's start through the workflow to the activity. On the session stack's Temporal server,
with an in-memory exporter in place of the OTLP one.
"""

from __future__ import annotations

import uuid

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from core import tracing
from core.settings import Settings
from core.temporal import connect
from tests.conftest import RunningStack
from tests.worker.traced import TracedWorkflow, greet

ENDPOINT = "http://127.0.0.1:4318/v1/traces"


def test_tracing_is_off_unless_an_endpoint_is_set() -> None:
    off = Settings(otlp_traces_endpoint=None)
    assert tracing.interceptors(off, "sterna-api") == []
    runner = SandboxedWorkflowRunner()
    assert tracing.workflow_runner(runner, off) is runner
    on = tracing.interceptors(Settings(otlp_traces_endpoint=ENDPOINT), "sterna-api")
    assert [type(i) for i in on] == [TracingInterceptor]


@pytest.mark.slow
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
async def test_a_traced_workflow_exports_one_trace_from_start_to_activity(stack: RunningStack) -> None:
    settings = stack.settings.model_copy(update={"otlp_traces_endpoint": ENDPOINT})
    exporter = InMemorySpanExporter()
    client = await connect(settings, tracing=tracing.interceptors(settings, "sterna-test", exporter))
    queue = f"traced-{uuid.uuid4().hex}"
    async with Worker(client, task_queue=queue, workflows=[TracedWorkflow], activities=[greet],
                      workflow_runner=tracing.workflow_runner(SandboxedWorkflowRunner(), settings)):
        result = await client.execute_workflow(TracedWorkflow.run, "vm-a", id=queue, task_queue=queue)
    assert result == "hello vm-a"
    spans = exporter.get_finished_spans()
    names = {s.name for s in spans}
    assert {"StartWorkflow:TracedWorkflow", "RunWorkflow:TracedWorkflow", "StartActivity:greet",
            "RunActivity:greet"} <= names, names
    assert len({s.context.trace_id for s in spans if s.context}) == 1, "one trace, start to activity"
    assert {s.resource.attributes["service.name"] for s in spans} == {"sterna-test"}
