"""Request limits every route shares, enforced before routing: body size, JSON depth, path and query.

Handlers then only see bounded bodies and well-formed parameters, so no route can answer a 500 (or
silently misbehave) on hostile input that a per-route check forgot.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response

#: longest path segment: ids are UUIDs, instance ids base64 of a name of at most 255 bytes
MAX_SEGMENT = 1024
#: longest query value (``env`` is base64 of a JSON object)
MAX_QUERY_VALUE = 16 * 1024
#: query parameters that are counts: non-negative integers (``limit=-1`` used to drop an item)
COUNT_PARAMS = frozenset({"limit"})

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKET = re.compile(rb"[\[\]{}]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_COUNT = re.compile(r"\d{1,9}")


def json_depth(body: bytes) -> int:
    """Deepest nesting of arrays and objects, without parsing (brackets inside strings don't count)."""
    depth = peak = 0
    for bracket in _BRACKET.findall(_STRING.sub(b'""', body)):
        depth += 1 if bracket in b"[{" else -1
        peak = max(peak, depth)
    return peak


def path_problem(path: str) -> str | None:
    # Every id Sterna hands out (UUIDs, base64 instance ids, platform names) is printable ASCII.
    for segment in path.split("/"):
        if len(segment) > MAX_SEGMENT:
            return f"Path segments are at most {MAX_SEGMENT} characters"
        if not segment.isascii() or not segment.isprintable():
            return "Ids in paths are printable ASCII (instance ids are URL-safe base64)"
    return None


def query_problem(raw: bytes) -> str | None:
    try:
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return "The query string is not valid UTF-8"
    for name, value in pairs:
        if len(value) > MAX_QUERY_VALUE or _CONTROL.search(name + value):
            return f"Query parameter '{name}' is too long or holds control characters"
        if name in COUNT_PARAMS and not _COUNT.fullmatch(value):
            return f"'{name}' must be a non-negative integer"
    return None


class RequestLimits:
    """ASGI middleware: 413 past ``max_body`` bytes, 400 past ``max_depth`` or for bad paths and queries."""

    def __init__(self, app: ASGIApp, *, max_body: int, max_depth: int) -> None:
        self.app = app
        self.max_body = max_body
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = path_problem(scope["path"]) or query_problem(scope.get("query_string", b""))
        if problem:
            await error_response(400, problem)(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and not declared.isdigit():
            await error_response(400, "Invalid Content-Length header")(scope, receive, send)
            return
        if declared is not None and int(declared) > self.max_body:
            await self._too_large(scope, receive, send)
            return
        body = await self._read(receive)
        if body is None:
            await self._too_large(scope, receive, send)
            return
        if body and json_depth(body) > self.max_depth:
            await error_response(400, f"Malformed request body: JSON nested deeper than {self.max_depth} "
                                 "levels")(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes ``max_body`` (chunked uploads declare no length)."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await error_response(413, f"The request body is larger than {self.max_body} bytes")(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
