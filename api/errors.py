"""Coriolis error bodies: ``{"error": {"code", "message", "fault"}}`` for every failure."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from core.errors import SternaError

log = logging.getLogger("sterna.api")

FAULTS = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    501: "notImplemented",
    503: "serviceUnavailable",
    500: "computeFault",
}


class ApiError(Exception):
    """An error with an HTTP status, raised by request handlers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Forbidden(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(403, message)


class Unauthorized(ApiError):
    def __init__(self, message: str = "Authentication required") -> None:
        super().__init__(401, message)


def error_response(status: int, message: str) -> JSONResponse:
    fault = FAULTS.get(status, "computeFault" if status >= 500 else "badRequest")
    return JSONResponse({"error": {"code": status, "message": message, "fault": fault}}, status_code=status)


async def handle_api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message)


async def handle_sterna_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SternaError)
    return error_response(exc.http_status, f"{exc.code}: {exc.message}")


async def handle_http_exception(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail)


async def handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "An unexpected error occurred; see the API log for details")
