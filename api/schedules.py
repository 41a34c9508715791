"""``/transfers/{transfer_id}/schedules``: each one a Temporal Schedule (never a home-made cron).

The record DB keeps the Coriolis view; Temporal keeps the schedule that fires. The schedule
starts ``TransferExecutionWorkflow`` without an execution id: its first activity creates the
execution, or skips the run when the transfer is busy.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from api import transfer_views as views
from api.deps import Deps, context, db, deps, json_body, timeouts
from api.errors import ApiError
from api.listing import flag
from api.schemas import describe_validation_error
from api.transfer_schemas import Cron, ScheduleCreate
from api.transfer_schemas import ScheduleUpdate as ScheduleBody
from store.models import TransferSchedule
from workflows import ids
from workflows.transfer import TransferExecutionWorkflow
from workflows.transfer_types import TransferExecutionInput


def _naive_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def temporal_schedule(d: Deps, row: TransferSchedule) -> Schedule:
    cron = Cron.model_validate(row.schedule or {})
    end = row.expiration_date.replace(tzinfo=UTC) if row.expiration_date else None
    return Schedule(
        action=ScheduleActionStartWorkflow(
            TransferExecutionWorkflow.run,
            TransferExecutionInput(transfer_id=row.transfer_id, shutdown_instances=row.shutdown_instance,
                                   auto_deploy=row.auto_deploy, timeouts=timeouts(d)),
            id=f"transfer-{row.transfer_id}/scheduled-{row.id}", task_queue=d.settings.task_queue,
        ),
        spec=ScheduleSpec(cron_expressions=[cron.expression()], end_at=end),
        # SKIP: a run never piles onto a running one; a short catch-up window, so an outage
        # does not replay a backlog of executions when the service comes back.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(hours=1)),
        state=ScheduleState(paused=not row.enabled, note="disabled through the API" if not row.enabled else None),
    )


async def _parse(request: Request, model: type[Any]) -> Any:
    from pydantic import ValidationError

    data = await json_body(request)
    # Coriolis schedule bodies are not wrapped in a key.
    if not isinstance(data, dict):
        raise ApiError(400, "The schedule body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, f"Invalid schedule: {describe_validation_error(exc)}") from exc


def _check_expiration(value: datetime | None) -> None:
    if value is not None and _naive_utc(value) <= datetime.now(UTC).replace(tzinfo=None):  # type: ignore[operator]
        raise ApiError(400, "'expiration_date' must be in the future")


async def create(request: Request) -> JSONResponse:
    ctx, d = await context(request, "migration:transfer_schedules:create"), deps(request)
    req: ScheduleCreate = await _parse(request, ScheduleCreate)
    _check_expiration(req.expiration_date)
    transfer = await db(d.store.get_action, "transfer", ctx.scope, request.path_params["transfer_id"])
    row = TransferSchedule(
        id=str(uuid.uuid4()), transfer_id=transfer.id, project_id=transfer.project_id,
        schedule=req.schedule.model_dump(exclude_none=True), expiration_date=_naive_utc(req.expiration_date),
        enabled=True if req.enabled is None else req.enabled, shutdown_instance=bool(req.shutdown_instance),
        auto_deploy=bool(req.auto_deploy),
    )
    try:
        await d.temporal.create_schedule(ids.schedule(row.id), temporal_schedule(d, row))
    except (RPCError, ScheduleAlreadyRunningError) as exc:
        raise ApiError(503, f"The execution engine could not create the schedule: {exc}") from exc
    try:
        saved = await db(d.store.create_schedule, {c: getattr(row, c) for c in (
            "id", "transfer_id", "project_id", "schedule", "expiration_date", "enabled", "shutdown_instance",
            "auto_deploy")})
    except BaseException:
        await drop_schedules(d, [row.id])
        raise
    return JSONResponse({"schedule": views.schedule(saved)})


def _visible(rows: Iterable[TransferSchedule], show_expired: bool) -> list[TransferSchedule]:
    now = datetime.now(UTC).replace(tzinfo=None)
    return [r for r in rows if show_expired or r.expiration_date is None or r.expiration_date > now]


async def index(request: Request) -> JSONResponse:
    ctx, d = await context(request, "migration:transfer_schedules:list"), deps(request)
    transfer = await db(d.store.get_action, "transfer", ctx.scope, request.path_params["transfer_id"])
    rows = _visible(await db(d.store.list_schedules, transfer.id), flag(request, "show_expired"))
    return JSONResponse({"schedules": [views.schedule(r) for r in rows]})


async def _get(request: Request, rule: str) -> tuple[Deps, TransferSchedule]:
    ctx, d = await context(request, rule), deps(request)
    transfer = await db(d.store.get_action, "transfer", ctx.scope, request.path_params["transfer_id"])
    return d, await db(d.store.get_schedule, transfer.id, request.path_params["id"])


async def show(request: Request) -> JSONResponse:
    _, row = await _get(request, "migration:transfer_schedules:show")
    return JSONResponse({"schedule": views.schedule(row)})


async def update(request: Request) -> JSONResponse:
    d, row = await _get(request, "migration:transfer_schedules:update")
    req: ScheduleBody = await _parse(request, ScheduleBody)
    fields: dict[str, Any] = {}
    for name in ("enabled", "shutdown_instance", "auto_deploy"):
        if getattr(req, name) is not None:
            fields[name] = getattr(req, name)
    if req.schedule is not None:
        fields["schedule"] = req.schedule.model_dump(exclude_none=True)
    if "expiration_date" in req.model_fields_set:  # an explicit null removes the expiration
        _check_expiration(req.expiration_date)
        fields["expiration_date"] = _naive_utc(req.expiration_date)
    candidate = TransferSchedule(**{c: getattr(row, c) for c in (
        "id", "transfer_id", "project_id", "schedule", "expiration_date", "enabled", "shutdown_instance",
        "auto_deploy")} | fields)
    new = temporal_schedule(d, candidate)

    def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
        return ScheduleUpdate(schedule=new)

    try:
        await d.temporal.get_schedule_handle(ids.schedule(row.id)).update(replace)
    except RPCError as exc:
        raise ApiError(503, f"The execution engine could not update the schedule: {exc.message}") from exc
    saved = await db(d.store.update_schedule, row.transfer_id, row.id, fields)
    return JSONResponse({"schedule": views.schedule(saved)})


async def drop_schedules(d: Deps, schedule_ids: Iterable[str]) -> None:
    for sid in schedule_ids:
        try:
            await d.temporal.get_schedule_handle(ids.schedule(sid)).delete()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise ApiError(503, f"The execution engine could not delete schedule {sid}: {exc.message}") \
                    from exc


async def delete(request: Request) -> Response:
    d, row = await _get(request, "migration:transfer_schedules:delete")
    await drop_schedules(d, [row.id])
    await db(d.store.delete_schedule, row.transfer_id, row.id)
    return Response(status_code=204)


