"""The OpenAPI document as clients see it: errors are problem+json, public reads need no token."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from kassa.errors import PROBLEM_JSON

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; `code` is stable and machine-readable.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
    "additionalProperties": True,
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_ERRORS = {
    "401": "Not signed in, or the token is invalid or expired",
    "403": "Signed in without the role this needs",
    "404": "No such resource (or someone else's)",
    "409": "Conflicts with the current state (see `code`)",
    "422": "Invalid request: `errors` names each field",
    "503": "Busy or not ready; retry after `Retry-After`",
}
# Reads anyone may make: a token, when sent, only widens what is visible.
_PUBLIC = {
    ("get", "/v1/products"),
    ("get", "/v1/products/{id_or_slug}"),
    ("get", "/v1/inventory/{sku}"),
}


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            needs_token = "security" in operation
            for status in _statuses(method, path, needs_token, has_input="422" in responses):
                responses[status] = {
                    "description": _ERRORS[status],
                    "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}},
                }
            for status, response in responses.items():
                # Errors a route declares itself (502 provider_unavailable, 400
                # invalid_signature) are problem+json like every other error.
                if status.startswith(("4", "5")):
                    response["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_REF}}
            if (method, path) in _PUBLIC and needs_token:
                operation["security"] = [*operation["security"], {}]
                responses.pop("403", None)
    return document


def _statuses(method: str, path: str, needs_token: bool, *, has_input: bool) -> list[str]:
    """The error statuses an operation can answer with."""
    statuses = []
    if needs_token:
        statuses += ["401", "403"]
    if "{" in path:
        statuses.append("404")
    if method in ("post", "patch", "delete") and path.startswith("/v1/"):
        statuses.append("409")
    if has_input:
        statuses.append("422")
    if path.startswith("/v1/") or path == "/readyz":
        statuses.append("503")
    return statuses
