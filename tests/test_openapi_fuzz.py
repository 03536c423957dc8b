"""Fuzz every operation of the OpenAPI schema in-process (ASGI) with Schemathesis.

Generated requests, valid and invalid, go as an admin to an app on a fresh SQLite database that
holds a small catalog, and two properties must hold for every response:

- no 5xx: an unhandled exception, or any other server error, fails the test;
- every 4xx is `application/problem+json` carrying a `code`.

Path parameters (and the SKUs of new holds) are sometimes swapped for ones that exist, so the
fuzzer gets past the "not found" checks into the handlers. Generation is derandomized and bounded
(25 fuzzed examples per operation, after the explicit and coverage cases Schemathesis derives
from the schema), so a run is repeatable and well under a minute. The admin token goes with every
request, except where a negative case drops the Authorization header on purpose (a 401 must be a
problem too).

The schema is loaded when the module is imported, as Schemathesis expects (its fixture-based
loader, `schemathesis.pytest.from_fixture`, fails on pytest 9.2). Loading it opens no database:
the app's engine connects on the first fuzzed request, after `fuzz_target` has put a migrated,
seeded copy of the SQLite template at the path the app was built with.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from kassa.app import create_app
from kassa.auth import service as auth_service
from kassa.auth.tokens import issue_token
from kassa.config import Settings
from kassa.db import Database
from tests.conftest import SECRET, Backend

MAX_EXAMPLES = 25
PROBLEM_JSON = "application/problem+json"  # not imported from kassa.errors: that is under test
DB_DIR = Path(tempfile.gettempdir()) / f"kassa-openapi-fuzz-{os.getpid()}"
FUZZ_SETTINGS = Settings(
    _env_file=None,
    database_url=f"sqlite+aiosqlite:///{DB_DIR / 'kassa.db'}",
    secret_key=SECRET,
    sweep_interval_seconds=0,
    admin_email=None,
    admin_password=None,
    redis_url=None,
)

app = create_app(FUZZ_SETTINGS, background=False)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@dataclass
class Targets:
    """Ids and SKUs that exist in the fuzzed database, by the path parameter that takes them."""

    by_parameter: dict[str, list[str]] = field(default_factory=dict)

    @property
    def skus(self) -> list[str]:
        return self.by_parameter.get("sku", [])


TARGETS = Targets()  # filled by `fuzz_target`, read by the hooks below while cases are generated


@schema.hook("flatmap_path_parameters")
def aim_at_existing_rows(
    _context: schemathesis.HookContext, path_parameters: Any
) -> st.SearchStrategy[Any]:
    if not isinstance(path_parameters, dict):
        return st.just(path_parameters)
    known = {name: TARGETS.by_parameter.get(name) for name in path_parameters}
    if not any(known.values()):
        return st.just(path_parameters)
    existing = st.fixed_dictionaries(
        {
            name: st.sampled_from(values) if values else st.just(path_parameters[name])
            for name, values in known.items()
        }
    )
    return st.one_of(st.just(path_parameters), existing)


@schema.hook("flatmap_body")
def hold_existing_skus(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    operation = context.operation
    if operation is None or (operation.method.upper(), operation.path) != ("POST", "/v1/holds"):
        return st.just(body)
    lines = body.get("lines") if isinstance(body, dict) else None
    if not TARGETS.skus or not isinstance(lines, list) or not lines:
        return st.just(body)
    if not all(isinstance(line, dict) for line in lines):
        return st.just(body)
    skus = st.lists(st.sampled_from(TARGETS.skus), min_size=len(lines), max_size=len(lines))
    existing = skus.map(
        lambda chosen: {
            **body,
            "lines": [{**line, "sku": sku} for line, sku in zip(lines, chosen, strict=True)],
        }
    )
    return st.one_of(st.just(body), existing)


async def _seed(database_url: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """An admin and its token, a product with two SKUs, an active hold on one of them, a paid
    order and an open checkout."""
    db = Database(database_url, pool_size=2)
    try:
        admin = await db.run(
            lambda s: auth_service.create_user(
                s, email="fuzz-admin@example.com", password="correct-horse-battery", role="admin"
            )
        )
        # Long-lived, so that a slow machine never turns the run into a stream of 401s.
        token, _ = issue_token(
            secret=SECRET, user_id=admin.id, role="admin", token_type="access", ttl_seconds=3600
        )
        headers = {"Authorization": f"Bearer {token}"}
        seeding_app = create_app(FUZZ_SETTINGS, db=db, background=False)
        transport = httpx.ASGITransport(app=seeding_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kassa.test") as http:
            product = {
                "name": "Fuzz Mug",
                "slug": "fuzz-mug",
                "variants": [
                    {"sku": "MUG-RED", "name": "Red", "price_amount": 1200, "on_hand": 50},
                    {
                        "sku": "MUG-BLUE",
                        "name": "Blue",
                        "price_amount": 1250,
                        "on_hand": 3,
                        "low_stock_threshold": 5,
                    },
                ],
            }
            created = await http.post("/v1/products", json=product, headers=headers)
            assert created.status_code == 201, created.text
            hold_body = {"lines": [{"sku": "MUG-RED", "quantity": 2}], "ttl_seconds": 3600}
            hold = await http.post("/v1/holds", json=hold_body, headers=headers)
            assert hold.status_code == 201, hold.text
            bought = await _buy(http, headers, seeding_app)
        body = created.json()
        skus = [variant["sku"] for variant in body["variants"]]
        return headers, {
            "id_or_slug": [body["id"], body["slug"]],
            "product_id": [body["id"]],
            "variant_id": [variant["id"] for variant in body["variants"]],
            "sku": skus,
            "hold_id": [hold.json()["id"]],
            **bought,
        }
    finally:
        await db.dispose()


async def _buy(http: httpx.AsyncClient, headers: dict[str, str], app: Any) -> dict[str, list[str]]:
    """A paid order (through checkout, the sandbox and its webhook) and an open checkout of a
    second cart, so that the cart, checkout, payment and order endpoints meet real rows."""
    rate = await http.put("/v1/admin/shipping-rates/us", json={"amount": 500}, headers=headers)
    assert rate.status_code == 200, rate.text
    address = {"name": "F", "line1": "1 Road", "city": "C", "postal_code": "1", "country": "us"}
    found: dict[str, list[str]] = {"cart_id": [], "item_id": [], "checkout_id": []}
    for sku in ("MUG-RED", "MUG-BLUE"):
        cart = (await http.post("/v1/carts")).json()
        guest = {"X-Cart-Token": cart["token"]}
        added = await http.post(
            f"/v1/carts/{cart['id']}/items", json={"sku": sku, "quantity": 1}, headers=guest
        )
        assert added.status_code == 200, added.text
        checkout = await http.post(
            "/v1/checkouts",
            json={"cart_id": cart["id"], "email": "f@example.com", "shipping_address": address},
            headers=guest,
        )
        assert checkout.status_code == 201, checkout.text
        found["cart_id"].append(cart["id"])
        found["item_id"].append(added.json()["items"][0]["id"])
        found["checkout_id"].append(checkout.json()["id"])
        found.setdefault("payment_id", []).append(checkout.json()["payment"]["id"])
    paid = await http.post(
        f"/v1/sandbox/payments/{found['payment_id'][0]}/pay",
        json={"card_number": "4242424242424242"},
        headers=headers,
    )
    assert paid.status_code == 202, paid.text
    await app.state.outbox.drain_all()
    done = (await http.get(f"/v1/checkouts/{found['checkout_id'][0]}", headers=headers)).json()
    assert done["order_id"], done
    found["order_id"] = [done["order_id"]]
    return found


@pytest.fixture(scope="module")
def fuzz_target(sqlite_backend: Backend) -> Iterator[dict[str, str]]:
    """Seed a fresh copy of the migrated SQLite template; the admin's headers for every call."""
    shutil.rmtree(DB_DIR, ignore_errors=True)
    DB_DIR.mkdir(parents=True)
    shutil.copy(sqlite_backend.url, DB_DIR / "kassa.db")
    headers, existing = asyncio.run(_seed(FUZZ_SETTINGS.database_url))
    TARGETS.by_parameter = existing
    yield headers
    TARGETS.by_parameter = {}
    shutil.rmtree(DB_DIR, ignore_errors=True)


def _media_type(response: schemathesis.Response) -> str:
    # Schemathesis responses keep each header as a list of values, under a lowercase name.
    values = response.headers.get("content-type") or [""]
    return str(values[0]).split(";")[0].strip()


def _describe(case: schemathesis.Case, response: schemathesis.Response) -> str:
    """The request as sent (method, URL, whether it was authenticated, body) and the response."""
    sent = response.request
    body = sent.body.decode(errors="replace") if isinstance(sent.body, bytes) else sent.body
    authenticated = "with" if "authorization" in {k.lower() for k in sent.headers} else "without"
    return (
        f"{sent.method} {sent.url} ({case.operation.label}, {authenticated} Authorization)\n"
        f"body: {body!r}\n"
        f"-> {response.status_code} {_media_type(response)} {response.text[:500]}"
    )


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
def test_no_server_error_and_every_client_error_is_a_problem(
    case: schemathesis.Case, fuzz_target: dict[str, str]
) -> None:
    response = case.call(headers=dict(fuzz_target))  # a copy: `call` adds its own headers to it
    assert response.status_code < 500, _describe(case, response)
    if 400 <= response.status_code < 500:
        assert _media_type(response) == PROBLEM_JSON, _describe(case, response)
        problem = response.json()
        assert isinstance(problem, dict), _describe(case, response)
        assert isinstance(problem.get("code"), str), _describe(case, response)
        assert problem["code"], _describe(case, response)
