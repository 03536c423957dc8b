"""Health, readiness (naming the failed check) and the OpenAPI document."""

from __future__ import annotations

import httpx

from kassa.app import create_app
from kassa.config import Settings
from kassa.db import Database
from tests.conftest import REDIS_URL, SECRET


async def test_healthz_and_readyz(client) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok"}


async def _get(settings: Settings, db: Database, path: str) -> httpx.Response:
    app = create_app(settings, db=db, background=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        return await http.get(path)


async def test_readyz_is_503_naming_the_database_when_it_is_down(tmp_path) -> None:
    url = "postgresql+asyncpg://kassa:secret-pw@127.0.0.1:1/nothing"
    settings = Settings(_env_file=None, database_url=url, secret_key=SECRET)
    db = Database(url)
    try:
        response = await _get(settings, db, "/readyz")
    finally:
        await db.dispose()
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["database"]
    assert body["checks"]["database"].startswith("failed")
    assert "secret-pw" not in response.text


async def test_readyz_checks_redis_when_configured(settings, db) -> None:
    if REDIS_URL:
        good = await _get(settings.model_copy(update={"redis_url": REDIS_URL}), db, "/readyz")
        assert good.status_code == 200
        assert good.json()["checks"] == {"database": "ok", "redis": "ok"}
    bad = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    response = await _get(bad, db, "/readyz")
    assert response.status_code == 503
    assert response.json()["failed"] == ["redis"]


async def test_openapi_and_docs_are_served(client) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path in ("/v1/products", "/v1/holds", "/v1/inventory/{sku}", "/healthz", "/readyz"):
        assert path in spec["paths"]
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_readyz_does_not_wait_for_a_long_sqlite_write(tmp_path, sqlite_backend) -> None:
    import shutil
    import sqlite3

    target = tmp_path / "busy.db"
    shutil.copy(sqlite_backend.url, target)
    url = f"sqlite+aiosqlite:///{target}"
    settings = Settings(_env_file=None, database_url=url, secret_key=SECRET)
    db = Database(url)
    writer = sqlite3.connect(target, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # holds the write lock for the whole check
        response = await _get(settings, db, "/readyz")
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        await db.dispose()
    assert response.status_code == 200


async def test_openapi_documents_errors_as_problems_and_public_reads(client) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "Problem" in spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert list(response["content"]) == ["application/problem+json"], (
                        method,
                        path,
                        status,
                    )
    assert {} in spec["paths"]["/v1/products"]["get"]["security"]
    assert {} not in spec["paths"]["/v1/holds"]["post"]["security"]
    assert "409" in spec["paths"]["/v1/holds"]["post"]["responses"]
