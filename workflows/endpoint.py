"""``EndpointCallWorkflow``: the API's provider calls (validate, list instances...) run on workers.

The API process never loads credentials into a cloud SDK; a short workflow runs one activity
that resolves the endpoint's connection_info where it is used.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities import names
    from core.errors import ConnectionFailed, non_retryable_types
    from workflows.types import EndpointCall


@workflow.defn
class EndpointCallWorkflow:
    @workflow.run
    async def run(self, call: EndpointCall) -> Any:
        return await workflow.execute_activity(
            names.ENDPOINT_CALL, call,
            start_to_close_timeout=timedelta(seconds=120),
            # Inventory calls are reads: retry transient faults, but answer the user quickly
            # (an unreachable endpoint will not come back within the API's timeout).
            retry_policy=RetryPolicy(maximum_attempts=2,
                                     non_retryable_error_types=non_retryable_types(ConnectionFailed)),
        )
