"""Per-request observability: the request id, one structured access-log line, Prometheus metrics.

Outermost middleware, so that every response (limits' 400/413 and unexpected 500s included) carries
``X-Request-Id`` and is counted. A caller's own ``X-Request-Id`` is kept when it looks like an id
(printable, short), so a request can be followed from a proxy's log into ours.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from core.logs import request_id

log = logging.getLogger("sterna.api.access")

HEADER = b"x-request-id"
_ACCEPTED = re.compile(rb"[A-Za-z0-9._:/+=-]{1,128}")

#: the API's own registry: the process's default one would mix in collectors that other code registers
REGISTRY = CollectorRegistry()
REQUESTS = Counter("sterna_api_requests", "HTTP requests answered", ["method", "route", "status"],
                   registry=REGISTRY)
ERRORS = Counter("sterna_api_errors", "HTTP requests answered with a 5xx status", ["method", "route"],
                 registry=REGISTRY)
LATENCY = Histogram("sterna_api_request_duration_seconds", "Time to answer a request", ["method", "route"],
                    registry=REGISTRY)


def _route_label(scope: Scope) -> str:
    # The route template, not the path: ids in paths would give every migration its own series.
    route: BaseRoute | None = scope.get("route")
    if isinstance(route, Route):
        return route.path
    return "unmatched"


class Observe:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(HEADER, b"")
        rid = sent.decode() if _ACCEPTED.fullmatch(sent) else f"req-{uuid.uuid4()}"
        token = request_id.set(rid)
        start = time.perf_counter()
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message["headers"] = [*message.get("headers", []), (HEADER, rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Answered here rather than by Starlette's outermost handler, so the 500 has the id too.
            log.exception("unexpected error on %s %s", scope["method"], scope["path"])
            if not started:
                await error_response(500, "An unexpected error occurred; see the API log for details")(
                    scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            method, route = scope["method"], _route_label(scope)
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(elapsed)
            if status >= 500:
                ERRORS.labels(method, route).inc()
            log.info("%s %s %d", method, scope["path"], status,
                     extra={"fields": {"method": method, "route": route, "status": status,
                                       "ms": round(elapsed * 1000, 1)}})
            request_id.reset(token)
