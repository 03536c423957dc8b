"""The query budget: SQL statements to create a checkout and to complete it from the webhook.

Saleor's checkout completion issues about 230 queries. Kassa's budget (docs/architecture.md):
create + complete <= 29 statements on either database, for a two-line cart with a coupon. (It
was 25 while the provider was called inside the checkout's transaction; asking the provider with
no lock held costs one short transaction more: BEGIN, read the payment, store the provider's
answer, record the phase's timing.)
Counted with SQLAlchemy's `before_cursor_execute` hook on the app's engine, so every statement
the request sends is counted (SQLite's `BEGIN IMMEDIATE` included; COMMIT is not a statement).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import event

from kassa.db import Database
from kassa.payments.providers import sandbox
from tests.checkout.flow import cart_with, open_shop, pay, start_checkout

BUDGET = 29


@contextmanager
def counting(db: Database) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(_conn, _cursor, statement, _params, _context, _executemany) -> None:
        statements.append(statement.split()[0].upper() + " " + statement[:60].replace("\n", " "))

    event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", count)


async def test_create_and_complete_within_the_budget(
    client, admin, settings, db, make_product
) -> None:
    await open_shop(client, admin.headers)
    await make_product(("PLATE", 10), ("BOWL", 10), price=1200)
    await client.post(
        "/v1/admin/coupons",
        json={"code": "TEN", "kind": "percent", "value": 10},
        headers=admin.headers,
    )
    cart, access = await cart_with(client, ("PLATE", 2), ("BOWL", 1))

    with counting(db) as create:
        response = await start_checkout(client, cart, access, coupon_code="TEN")
    assert response.status_code == 201, response.text
    checkout = response.json()
    await pay(client, checkout["payment"]["id"])
    event_body = sandbox.event(
        "payment.succeeded",
        datetime.now(UTC),
        {
            "payment_id": checkout["payment"]["id"],
            "provider_reference": checkout["payment"]["provider_reference"],
            "amount": checkout["total_amount"],
            "currency": "usd",
        },
    )
    body = sandbox.body_of(event_body)
    headers = sandbox.signed_headers(
        settings.sandbox_webhook_secret.get_secret_value(),
        event_body["id"],
        body,
        datetime.now(UTC),
    )
    with counting(db) as complete:
        response = await client.post("/v1/webhooks/sandbox", content=body, headers=headers)
    assert response.json()["outcome"] == "processed"
    order = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    assert order["state"] == "completed"
    print(f"\n[{db.dialect}] create: {len(create)} statements, complete: {len(complete)}")
    for line in [*create, "--", *complete]:
        print("  ", line)
    assert len(create) + len(complete) <= BUDGET, (len(create), len(complete))
