"""What handlers share: the record store, the Temporal client, settings and auth."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from api.context import RequestContext
from api.errors import ApiError
from api.policy import Policy
from api.schemas import describe_validation_error
from core.errors import error_class
from core.keystone import KeystoneService
from core.settings import Settings
from store.repo import Store
from workflows import ids
from workflows.endpoint import EndpointCallWorkflow
from workflows.failures import root_cause
from workflows.types import EndpointCall, Timeouts

M = TypeVar("M", bound=BaseModel)


class AuthStrategy(Protocol):
    name: str

    async def authenticate(self, request: Request, project_id: str) -> RequestContext: ...


@dataclass
class Deps:
    settings: Settings
    store: Store
    temporal: Client
    auth: AuthStrategy
    policy: Policy = field(default_factory=Policy)
    #: the service user's Keystone client (auth_strategy = keystone), for trusts
    keystone: KeystoneService | None = None


def deps(request: Request) -> Deps:
    d: Deps = request.app.state.deps
    return d


async def context(request: Request, rule: str | None = None) -> RequestContext:
    """Authenticate the caller and, when ``rule`` names a policy rule, enforce it (403)."""
    d = deps(request)
    ctx = await d.auth.authenticate(request, request.path_params["project_id"])
    if rule is not None:
        d.policy.enforce(rule, ctx)
    return ctx


async def body(request: Request, key: str, model: type[M]) -> M:
    """Parse ``{"<key>": {...}}`` into ``model`` or raise a Coriolis-style 400."""
    raw = await request.body()
    try:
        data = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"Malformed request body: {exc}") from exc
    if not isinstance(data, dict) or key not in data:
        raise ApiError(400, f'The {key} creation body needs to be encased inside the "{key}" key')
    inner = data[key]
    if not isinstance(inner, dict):
        raise ApiError(400, f'"{key}" must be a JSON object')
    try:
        return model.model_validate(inner)
    except ValidationError as exc:
        raise ApiError(400, f"Invalid {key}: {describe_validation_error(exc)}") from exc


async def json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"Malformed request body: {exc}") from exc


async def db(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a synchronous store call off the event loop."""
    return await run_in_threadpool(fn, *args, **kwargs)


async def endpoint_call(d: Deps, call: EndpointCall, timeout: float = 90.0) -> Any:
    """Run a provider call on a worker and return its JSON result, mapping failures to HTTP."""
    try:
        return await asyncio.wait_for(
            d.temporal.execute_workflow(
                EndpointCallWorkflow.run, call,
                id=ids.endpoint_call(call.endpoint_id, call.operation, str(uuid.uuid4())),
                task_queue=d.settings.task_queue,
                execution_timeout=timedelta(seconds=timeout),
            ),
            timeout + 5,
        )
    except WorkflowFailureError as exc:
        cause = root_cause(exc.cause) if exc.cause is not None else None
        if isinstance(cause, ApplicationError):
            raise ApiError(_worker_failure_status(cause.type), f"{cause.type}: {cause.message}") from exc
        raise ApiError(504, "No worker answered the endpoint call in time; is a worker running?") from exc
    except (TimeoutError, RPCError) as exc:
        raise ApiError(503, f"The execution engine is unavailable: {exc}") from exc


def _worker_failure_status(error_type: str | None) -> int:
    """A client error keeps its status; anything else failed upstream, at the provider: 502."""
    cls = error_class(error_type)
    return cls.http_status if cls is not None and cls.http_status < 500 else 502


def timeouts(d: Deps) -> Timeouts:
    """Activity timing for a new workflow, from the settings of this API process."""
    s = d.settings
    return Timeouts(heartbeat=s.heartbeat_timeout, transfer=s.transfer_timeout,
                    host_schedule_to_start=s.host_schedule_to_start_timeout, retry_max_interval=s.retry_max_interval)
