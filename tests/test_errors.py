"""Every error is problem+json with a stable code; bad input is never a 500."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter

from kassa.app import create_app


async def test_malformed_json_is_422(client, admin) -> None:
    response = await client.post(
        "/v1/products",
        content=b'{"name": "x", ',
        headers=admin.headers | {"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert problem["errors"][0]["field"] == "body"
    assert set(problem) >= {"type", "title", "status", "detail", "code"}


async def test_unknown_route_and_method(client) -> None:
    missing = await client.get("/v1/nothing-here")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert missing.headers["content-type"] == "application/problem+json"
    wrong = await client.delete("/healthz")
    assert (wrong.status_code, wrong.json()["code"]) == (405, "method_not_allowed")


async def test_unexpected_errors_are_500_without_a_trace(settings, db) -> None:
    app = create_app(settings, db=db, background=False)
    router = APIRouter()

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret database password hunter2")

    app.include_router(router)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.get("/boom")
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert "hunter2" not in response.text and "Traceback" not in response.text


@pytest.mark.parametrize("path", ["/v1/products/" + "x" * 500, "/v1/inventory/" + "y" * 100])
async def test_overlong_path_parameters_are_422(client, path) -> None:
    response = await client.get(path)
    assert response.status_code == 422
