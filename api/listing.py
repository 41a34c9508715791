"""Query strings of Coriolis lists: marker, limit, sort_key/sort_dir, status, show_deleted, include_task_info."""

from __future__ import annotations

from starlette.requests import Request

from api.errors import ApiError
from store.paging import Page

EXECUTION_STATUSES = frozenset({"UNEXECUTED", "PENDING", "RUNNING", "CANCELLING", "AWAITING_MINION_ALLOCATIONS",
                                "COMPLETED", "ERROR", "CANCELED", "CANCELED_FOR_DEBUGGING", "DEADLOCKED",
                                "ERROR_ALLOCATING_MINIONS"})
#: API sort keys -> columns, for actions (transfers, deployments) and for executions
ACTION_SORT = {"created_at": "created_at", "updated_at": "updated_at", "id": "id", "notes": "notes",
               "status": "last_execution_status", "last_execution_status": "last_execution_status"}
EXECUTION_SORT = {"created_at": "created_at", "updated_at": "updated_at", "id": "id", "number": "number",
                  "status": "status"}


def flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "false").lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ApiError(400, f"'{name}' must be true or false, not '{value}'")
    return value in ("true", "1", "yes")


def status_filter(request: Request) -> str | None:
    status = request.query_params.get("status")
    if status is not None and status.upper() not in EXECUTION_STATUSES:
        raise ApiError(400, f"Invalid status '{status}'; valid: {', '.join(sorted(EXECUTION_STATUSES))}")
    return status.upper() if status else None


def page(request: Request, columns: dict[str, str]) -> Page:
    """Repeated ``sort_key``/``sort_dir`` (default created_at desc), ``marker`` and ``limit``."""
    keys = request.query_params.getlist("sort_key")
    dirs = request.query_params.getlist("sort_dir")
    sort = []
    for i, key in enumerate(keys):
        if key not in columns:
            raise ApiError(400, f"Invalid sort_key '{key}'; valid: {', '.join(sorted(columns))}")
        direction = dirs[i] if i < len(dirs) else "desc"
        if direction not in ("asc", "desc"):
            raise ApiError(400, f"Invalid sort_dir '{direction}': asc or desc")
        sort.append((columns[key], direction))
    limit = request.query_params.get("limit")
    if limit is not None and not limit.isdigit():
        raise ApiError(400, "'limit' must be a non-negative integer")
    return Page(sort=sort, marker=request.query_params.get("marker") or None,
                limit=int(limit) if limit is not None else None)
