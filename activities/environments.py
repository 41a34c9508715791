"""Environment secrets resolved inside the activity, never in the workflow.

Workflow inputs carry ``{"$sterna_secret": "<action id>/<uuid>"}`` references where the
environments held secret values (``core.secrets``). This worker interceptor replaces them by the
values, read from the record DB and decrypted, in the activity's own copy of its input: the values
live in this process's memory for the attempt, and never enter Temporal (inputs, results,
heartbeats). One place for every activity, so that no step can forget it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from activities.failures import to_application_error
from activities.services import Services
from core.errors import SternaError
from core.secrets import references, resolve_tree
from store.environments import EnvironmentSecrets


def resolve_args(store: EnvironmentSecrets, args: Sequence[Any]) -> list[Any]:
    """``args`` with every secret reference in their pydantic models replaced by its value. Blocking."""
    out: list[Any] = []
    for arg in args:
        data = arg.model_dump(mode="json") if isinstance(arg, BaseModel) else None
        refs = set(references(data)) if data is not None else set()
        if not refs:
            out.append(arg)
            continue
        values = store.environment_secrets(refs)
        out.append(type(arg).model_validate(resolve_tree(data, values.__getitem__)))
    return out


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, services: Services) -> None:
        super().__init__(next)
        self.services = services

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        if any(isinstance(a, BaseModel) and next(references(a.model_dump(mode="json")), None) for a in input.args):
            try:
                args = await asyncio.to_thread(resolve_args, self.services.store, input.args)
            except SternaError as exc:
                raise to_application_error(exc) from None
            input = dataclasses.replace(input, args=args)
        return await self.next.execute_activity(input)


class SecretEnvironments(Interceptor):
    def __init__(self, services: Services) -> None:
        self.services = services

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self.services)
