"""Query strings of Coriolis lists: marker, limit, sort_key/sort_dir, status, show_deleted, include_task_info."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from starlette.requests import Request

from api.errors import ApiError

EXECUTION_STATUSES = frozenset({"UNEXECUTED", "PENDING", "RUNNING", "CANCELLING", "AWAITING_MINION_ALLOCATIONS",
                                "COMPLETED", "ERROR", "CANCELED", "CANCELED_FOR_DEBUGGING", "DEADLOCKED",
                                "ERROR_ALLOCATING_MINIONS"})
SORT_KEYS = frozenset({"created_at", "updated_at", "id", "status", "last_execution_status", "number", "notes"})


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


def _sort_key(attr: str) -> Callable[[Any], tuple[bool, Any]]:
    return lambda row: (getattr(row, attr, None) is None, getattr(row, attr, None) or "")


def page(request: Request, rows: Iterable[Any]) -> list[Any]:
    """Sort (repeated ``sort_key``/``sort_dir``, default created_at desc), then marker and limit."""
    out = list(rows)
    keys = request.query_params.getlist("sort_key")
    dirs = request.query_params.getlist("sort_dir")
    for i, key in reversed(list(enumerate(keys))):
        if key not in SORT_KEYS:
            raise ApiError(400, f"Invalid sort_key '{key}'; valid: {', '.join(sorted(SORT_KEYS))}")
        direction = dirs[i] if i < len(dirs) else "desc"
        if direction not in ("asc", "desc"):
            raise ApiError(400, f"Invalid sort_dir '{direction}': asc or desc")
        # Actions carry their status as last_execution_status, executions as status.
        attr = "last_execution_status" if key == "status" and out and not hasattr(out[0], "status") else key
        out.sort(key=_sort_key(attr), reverse=direction == "desc")
    marker = request.query_params.get("marker")
    if marker:
        ids = [r.id for r in out]
        if marker not in ids:
            raise ApiError(404, f"Marker '{marker}' could not be found")
        out = out[ids.index(marker) + 1:]
    limit = request.query_params.get("limit")
    if limit:
        if not limit.isdigit():
            raise ApiError(400, "'limit' must be a non-negative integer")
        out = out[: int(limit)]
    return out
