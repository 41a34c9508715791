"""Optional OpenTelemetry tracing through Temporal's interceptor (``temporalio.contrib.opentelemetry``).

Off unless ``STERNA_OTLP_TRACES_ENDPOINT`` names an OTLP/HTTP collector. When on, the API's client
opens a span for each workflow it starts and passes its context in the workflow's headers; a worker
continues the trace in the workflow and in each activity. The tracer provider is the process's own,
not OpenTelemetry's global one, so nothing else in the process changes when tracing is on; the
``opentelemetry`` packages (the ``tracing`` extra) are imported only then.

Spans leave in batches (every 5 s, OpenTelemetry's default): a process that stops must call
:func:`shutdown`, or the spans of its last seconds, often the interesting ones, are lost. The
provider's own flush at exit (``atexit``) is not enough: uvicorn, once shut down, raises the SIGTERM
it handled again, and the API dies of it without running ``atexit`` handlers.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from core.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from temporalio.worker import WorkflowRunner

#: the tracer providers this process made, for :func:`shutdown`
_providers: list[TracerProvider] = []


def enabled(settings: Settings) -> bool:
    return bool(settings.otlp_traces_endpoint)


def interceptors(settings: Settings, service: str, exporter: SpanExporter | None = None) -> list[Any]:
    """The client interceptors that trace (workers built on that client trace too); none when off.

    ``exporter`` replaces the OTLP exporter (a test's in-memory one).
    """
    if exporter is None and not enabled(settings):
        return []
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from temporalio.contrib.opentelemetry import TracingInterceptor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # Batched: a span's export never waits on the collector inside a request or an activity.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_traces_endpoint)))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _providers.append(provider)
    return [TracingInterceptor(provider.get_tracer("sterna"))]


def shutdown() -> None:
    """Export the spans still batched and stop tracing; nothing to do when tracing is off. Blocking:
    each exporter gets its own timeout (OTLP's 10 s) to deliver, then gives up."""
    while _providers:
        _providers.pop().shutdown()


def workflow_runner(runner: WorkflowRunner, settings: Settings) -> WorkflowRunner:
    """The sandbox lets ``opentelemetry`` through when tracing is on: the interceptor's workflow side
    uses it, and a module re-imported per workflow run would not share the tracer's state."""
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

    if enabled(settings) and isinstance(runner, SandboxedWorkflowRunner):
        return dataclasses.replace(runner, restrictions=runner.restrictions.with_passthrough_modules("opentelemetry"))
    return runner
