"""One error shape everywhere: {"error": {"code", "message", "details?"}}."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from channels.faults import transient

log = logging.getLogger("kuda.errors")

STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    412: "precondition_failed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    428: "precondition_required",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class AppError(Exception):
    """A refusal a client can act on. Services raise it; the handler renders the contract shape."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers


class Unauthorized(AppError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str = "Not authenticated", **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kw)


class Forbidden(AppError):
    status, code = 403, "forbidden"


class NotFound(AppError):
    status, code = 404, "not_found"


class Conflict(AppError):
    status, code = 409, "conflict"


class PreconditionFailed(AppError):
    status, code = 412, "precondition_failed"


class ValidationFailed(AppError):
    status, code = 422, "validation_error"


class RateLimited(AppError):
    status, code = 429, "rate_limited"

    def __init__(self, retry_after_s: int, message: str = "Too many requests") -> None:
        retry = max(1, int(retry_after_s))
        super().__init__(
            message, details={"retry_after_s": retry}, headers={"Retry-After": str(retry)}
        )


class Unavailable(AppError):
    status, code = 503, "unavailable"


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = STATUS_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404 and message == "Not Found":
        message = "No such resource"
    return error_response(exc.status_code, code, message, headers=exc.headers)


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    fields = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ())]
        fields.append(
            {"field": ".".join(loc), "message": err.get("msg", ""), "type": err.get("type")}
        )
    return fields


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "validation_error", "Invalid request", _field_errors(exc))


UNAVAILABLE_RETRY_AFTER_S = 1


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """The database is stopped, restarting, stalled or saturated: 503, retry shortly. Anything
    else from the driver is a bug (500)."""
    if _unstorable(exc):
        return await _data_error(request, exc)
    if not transient(exc):
        return await _unexpected(request, exc)
    log.warning("database unavailable on %s: %s: %s", request.url.path, type(exc).__name__,
                getattr(exc, "orig", exc))  # fmt: skip
    retry = str(UNAVAILABLE_RETRY_AFTER_S)
    return error_response(
        503,
        "unavailable",
        "The database is unavailable; retry shortly",
        {"retry_after_s": UNAVAILABLE_RETRY_AFTER_S},
        {"Retry-After": retry},
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    request_id = request.scope.get("state", {}).get("request_id", "-")
    log.exception("unhandled error request_id=%s path=%s", request_id, request.url.path)
    return error_response(
        500, "internal_error", "Internal server error", {"request_id": request_id}
    )


def _unstorable(exc: BaseException) -> bool:
    """A value the driver could not send (text with lone surrogates, a date or number beyond
    its range): the client's input, refused as PostgreSQL would refuse it."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, UnicodeEncodeError | OverflowError):
            return True
        current, seen = current.__cause__ or current.__context__, seen + 1
    return False


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    """A value PostgreSQL refused as data (out of range, not representable): the client's
    input, not a server fault. Validation should have caught it first; log to find where."""
    log.warning("data error on %s: %s", request.url.path, getattr(exc, "orig", exc))
    return error_response(422, "validation_error", "A value is out of range or not storable")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(UnicodeEncodeError, _data_error)
    app.add_exception_handler(OverflowError, _data_error)
    for kind in (DBAPIError, PoolTimeout, OSError):  # OSError: TimeoutError, refused connects
        app.add_exception_handler(kind, _database_error)
    app.add_exception_handler(Exception, _unexpected)
