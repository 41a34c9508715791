"""Structured logs: one JSON object per line, carrying the request id or the Temporal ids.

The API puts the request id in ``request_id`` (``api.observe``); the worker's activity interceptor puts
the workflow and activity ids in ``log_fields``. Both are context variables, so they follow a request or
an activity into ``asyncio.to_thread`` calls, and any logger (providers, diskio) gets them for free.
The Temporal SDK's own adapters add ``temporal_workflow`` / ``temporal_activity`` to their records;
those are merged in too.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id: ContextVar[str | None] = ContextVar("sterna_request_id", default=None)
log_fields: ContextVar[dict[str, Any] | None] = ContextVar("sterna_log_fields", default=None)

# What the SDK's logger adapters attach to a record, and the short names our lines use for it.
_TEMPORAL_KEYS = {"workflow_id": "workflow_id", "run_id": "run_id", "activity_id": "activity_id",
                  "activity_type": "activity_type", "workflow_type": "workflow_type", "attempt": "attempt"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "service": self.service,
            "msg": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            line["request_id"] = rid
        line.update(log_fields.get() or {})
        for attr in ("temporal_workflow", "temporal_activity"):
            extra = getattr(record, attr, None)
            if isinstance(extra, dict):
                line.update({_TEMPORAL_KEYS[k]: v for k, v in extra.items() if k in _TEMPORAL_KEYS})
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(service: str, level: int = logging.INFO) -> None:
    """Every record of the process, ours, uvicorn's and the SDK's, as JSON lines on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # uvicorn installs its own handlers when given a log config; ours is the only one.
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
