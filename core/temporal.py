"""Temporal client construction: every client uses the pydantic data converter."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime

from core.settings import Settings
from core.tracing import interceptors


async def connect(settings: Settings, *, lazy: bool = False, runtime: Runtime | None = None,
                  service: str = "sterna", tracing: list[Any] | None = None) -> Client:
    """``lazy``: connect on first use, so a process can start (and say it is not ready) before Temporal.

    ``service`` names the process in traces (when ``STERNA_OTLP_TRACES_ENDPOINT`` turns them on);
    ``tracing`` replaces the interceptors that setting makes (a test's in-memory exporter).
    """
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        lazy=lazy,
        runtime=runtime,
        interceptors=tracing if tracing is not None else interceptors(settings, service),
    )
