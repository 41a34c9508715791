"""The worker's observability: structured logs with Temporal ids, Sterna's and the SDK's Prometheus metrics.

An activity interceptor wraps every attempt: it puts the workflow and activity ids in the log
context (``core.logs``), times the attempt by activity, Coriolis task type and provider, and counts
running transfers. Sterna's metrics and the Temporal SDK runtime's are served on two ports: the SDK's
exporter is its own HTTP server in Rust, with no hook to add Python collectors to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from prometheus_client import start_http_server
from temporalio import activity, workflow
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from activities import names
from activities.metrics import ACTIVE_TRANSFERS, REGISTRY, STEP_SECONDS, StepLabels, current_step
from core.logs import log_fields
from core.settings import Settings

log = logging.getLogger("sterna.worker")

#: the activities that move disk bytes (``sterna_active_transfers``)
TRANSFERS = frozenset({names.EXPORT_DISK, names.UPLOAD_DISK, names.REPLICATE_DISK})


def _task_type(args: Any) -> str:
    """The Coriolis task an activity works for, from its pydantic input (``task`` or ``step.task``)."""
    for arg in args:
        task = getattr(arg, "task", None) or getattr(getattr(arg, "step", None), "task", None)
        kind = getattr(task, "task_type", None)
        if kind is not None:
            return str(getattr(kind, "value", kind))
    return "none"


class _Inbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        fields_token = log_fields.set({"workflow_id": info.workflow_id, "run_id": info.workflow_run_id,
                                       "activity_id": info.activity_id, "activity_type": info.activity_type,
                                       "attempt": info.attempt})
        labels = StepLabels(task_type=_task_type(input.args))
        step_token = current_step.set(labels)
        transfer = info.activity_type in TRANSFERS
        if transfer:
            ACTIVE_TRANSFERS.labels(labels.task_type).inc()
        started, outcome = time.monotonic(), "error"
        try:
            result = await self.next.execute_activity(input)
            outcome = "ok"
            return result
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            if transfer:
                ACTIVE_TRANSFERS.labels(labels.task_type).dec()
            STEP_SECONDS.labels(info.activity_type, labels.task_type, labels.provider, outcome).observe(
                time.monotonic() - started)
            current_step.reset(step_token)
            log_fields.reset(fields_token)


class Observability(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next)


def _split(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host.strip("[]"), int(port)


def runtime(settings: Settings) -> Runtime:
    """The SDK runtime: its Rust core's log lines go through Python logging (so they are JSON too)."""
    # The ids are fields of our JSON lines (``core.logs``); the SDK would also append them to the text.
    activity.logger.activity_info_on_message = False
    workflow.logger.workflow_info_on_message = False
    telemetry = TelemetryConfig(
        logging=LoggingConfig(filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
                              forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core"))),
        metrics=PrometheusConfig(bind_address=settings.temporal_metrics_address)
        if settings.temporal_metrics_address else None,
    )
    return Runtime(telemetry=telemetry)


def serve_metrics(settings: Settings) -> None:
    if settings.worker_metrics_address:
        host, port = _split(settings.worker_metrics_address)
        start_http_server(port, addr=host, registry=REGISTRY)
        log.info("Sterna metrics on http://%s/metrics", settings.worker_metrics_address)
    if settings.temporal_metrics_address:
        log.info("Temporal SDK metrics on http://%s/metrics", settings.temporal_metrics_address)
