"""RFC 9457 problem+json errors: the base error type and the handlers that render every error."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

log = structlog.get_logger("kassa.errors")

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://kassa.dev/problems/"


class KassaError(Exception):
    """A business failure with a stable code; services raise subclasses, one handler renders."""

    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"
    headers: dict[str, str] | None = None

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


def field_error(field: str, message: str) -> list[dict[str, Any]]:
    """The `errors` list of a 422 raised by a service, in the shape of validation errors."""
    return [
        {
            "field": field,
            "loc": ["body", *field.split(".")],
            "message": message,
            "type": "value_error",
        }
    ]


class InvalidInput(KassaError):
    """Input that passed the schema but breaks a rule; 422 naming the field."""

    status, code, title = 422, "validation_error", "Invalid request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"Invalid fields: {field}: {message}", errors=field_error(field, message))


class NotFound(KassaError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(KassaError):
    status, code, title = 409, "conflict", "Conflict"


class Unauthenticated(KassaError):
    status, code, title = 401, "unauthenticated", "Authentication required"
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(KassaError):
    status, code, title = 403, "forbidden", "Forbidden"


class InvalidTransition(KassaError):
    status, code, title = 409, "invalid_transition", "Invalid state transition"

    def __init__(self, detail: str, *, from_state: str, to_state: str) -> None:
        super().__init__(detail, **{"from": from_state, "to": to_state})


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    body.update(extra)
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _clean_validation_errors(errors: Any) -> list[dict[str, Any]]:
    """Field, message and type of each failure; never the raw input (it may be a secret)."""
    cleaned = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        if error.get("type") == "json_invalid":
            position = loc[-1] if len(loc) > 1 else "?"
            cleaned.append(
                {
                    "field": "body",
                    "loc": ["body"],
                    "message": f"malformed JSON (at character {position})",
                    "type": "json_invalid",
                }
            )
            continue
        cleaned.append(
            {
                "field": ".".join(p for p in loc if p not in ("body", "query", "path", "header"))
                or "body",
                "loc": loc,
                "message": error.get("msg", "invalid value"),
                "type": error.get("type", "value_error"),
            }
        )
    return cleaned


class RefuseNulMiddleware:
    """A NUL character in the path or query is a 422 before any endpoint runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b"").lower()
        ):
            response = problem(
                422,
                "validation_error",
                "Invalid request",
                "the path or query contains a NUL character",
                errors=[
                    {
                        "field": "path",
                        "loc": ["path"],
                        "message": "NUL character",
                        "type": "value_error",
                    }
                ],
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_middleware(RefuseNulMiddleware)

    @app.exception_handler(KassaError)
    async def _kassa_error(_request: Request, error: KassaError) -> JSONResponse:
        response = problem(error.status, error.code, error.title, error.detail, **error.extra)
        if error.headers:
            response.headers.update(error.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        errors = _clean_validation_errors(error.errors())
        fields = ", ".join(e["field"] or "body" for e in errors)
        return problem(
            422, "validation_error", "Invalid request", f"Invalid fields: {fields}", errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        status = error.status_code
        if status == 400:
            # The body could not even be read (not UTF-8, a broken form): bad input like
            # malformed JSON, so the same 422.
            return problem(
                422,
                "validation_error",
                "Invalid request",
                "the request body cannot be parsed",
                errors=[
                    {
                        "field": "body",
                        "loc": ["body"],
                        "message": "cannot be parsed",
                        "type": "body_invalid",
                    }
                ],
            )
        code = {
            401: "unauthenticated",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
            409: "conflict",
        }.get(status, "error")
        title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        detail = error.detail if isinstance(error.detail, str) else title
        response = problem(status, code, title, detail)
        if error.headers:
            response.headers.update(error.headers)
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        from kassa.db import is_data_error, is_transient

        if is_data_error(error):
            # Input the schemas let through but the database refuses as data (a character it
            # cannot store, a number out of its range): the caller's input, so a 422.
            return problem(
                422,
                "validation_error",
                "Invalid request",
                "a value in the request cannot be stored",
                errors=[],
            )
        if is_transient(error):
            # Retried already where it is safe to; the client may simply try again.
            log.warning("transient_database_error", path=request.url.path)
            return problem(503, "busy", "Service busy, try again", "please retry the request")
        log.error(
            "unhandled_error",
            path=request.url.path,
            error_type=type(error).__name__,
            exc_info=error,
        )
        return problem(
            500,
            "internal_error",
            "Internal server error",
            "Something went wrong on our side; it has been logged.",
        )
