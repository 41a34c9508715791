"""Liveness, readiness and metrics: what an orchestrator and Prometheus ask of the API.

``/healthz`` needs nothing, so a restart loop is never caused by a peer being down; ``/readyz``
checks the record DB and the Temporal frontend, each with a short timeout, so a load balancer stops
sending requests that could not be served. Neither needs authentication.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.deps import deps
from api.observe import REGISTRY

CHECK_TIMEOUT = 3.0


async def healthz(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    d = deps(request)
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(asyncio.to_thread(d.store.db.ping), CHECK_TIMEOUT)
        checks["database"] = "ok"
    except Exception as exc:  # any failure means "not ready"; the message says which
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        healthy = await asyncio.wait_for(
            d.temporal.service_client.check_health(timeout=timedelta(seconds=CHECK_TIMEOUT)), CHECK_TIMEOUT + 1)
        checks["temporal"] = "ok" if healthy else "unavailable: not serving"
    except Exception as exc:
        checks["temporal"] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                        status_code=200 if ready else 503)


async def metrics(_request: Request) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
