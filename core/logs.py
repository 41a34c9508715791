"""Structured logs: one JSON object per line, carrying the request id or the Temporal ids.

Every line carries its process's ids: ``service`` (api, worker), ``host_id`` and ``process_id``
(the service and a random suffix, new at each start). A line written outside any request or
activity (start-up, shutdown, the SDK's own housekeeping) is known by those alone.
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
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id: ContextVar[str | None] = ContextVar("sterna_request_id", default=None)
log_fields: ContextVar[dict[str, Any] | None] = ContextVar("sterna_log_fields", default=None)

# What the SDK's logger adapters attach to a record, and the short names our lines use for it.
_TEMPORAL_KEYS = {"workflow_id": "workflow_id", "run_id": "run_id", "activity_id": "activity_id",
                  "activity_type": "activity_type", "workflow_type": "workflow_type", "attempt": "attempt"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, host_id: str) -> None:
        super().__init__()
        self.service = service
        self.host_id = host_id
        # Not the pid: pids repeat across hosts and restarts, and a restarted worker is another process.
        self.process_id = f"{service}-{uuid.uuid4().hex[:12]}"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "service": self.service,
            "host_id": self.host_id,
            "process_id": self.process_id,
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


def setup_logging(service: str, host_id: str, level: int = logging.INFO) -> None:
    """Every record of the process, ours, uvicorn's and the SDK's, as JSON lines on stderr.

    Called first thing in ``main``, so that the start-up lines are JSON with the process's ids too.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service, host_id))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # A library's warning would be a bare line on stderr, without ids; as a record it is one of ours.
    logging.captureWarnings(True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # uvicorn installs its own handlers when given a log config; ours is the only one.
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
