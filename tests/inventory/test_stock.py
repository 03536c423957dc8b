"""Stock levels, adjustments, the ledger endpoint and low stock."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError


async def test_stock_level_is_public(client, make_product) -> None:
    await make_product(("A", 7))
    response = await client.get("/v1/inventory/A")
    assert response.json() == {"sku": "A", "on_hand": 7, "reserved": 0, "available": 7}
    missing = await client.get("/v1/inventory/NOPE")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"


async def test_adjustments_move_on_hand_and_are_recorded(client, admin, make_product) -> None:
    await make_product(("A", 5))
    response = await client.post(
        "/v1/inventory/A/adjustments",
        json={"delta": 10, "reason": "restock"},
        headers=admin.headers,
    )
    assert response.status_code == 200
    assert response.json() == {"sku": "A", "on_hand": 15, "reserved": 0, "available": 15}
    response = await client.post(
        "/v1/inventory/A/adjustments",
        json={"delta": -3, "reason": "damage", "note": "dropped"},
        headers=admin.headers,
    )
    assert response.json()["on_hand"] == 12

    movements = (await client.get("/v1/inventory/A/movements", headers=admin.headers)).json()
    kinds = [(m["kind"], m["on_hand_delta"], m["reserved_delta"]) for m in movements["data"]]
    assert kinds == [("initial", 5, 0), ("restock", 10, 0), ("adjustment", -3, 0)]
    assert movements["data"][2]["reason"] == "damage: dropped"
    assert movements["data"][2]["actor_id"] == admin.id
    assert all(m["reference_id"] for m in movements["data"])


async def test_adjustment_below_reserved_is_409(client, admin, make_product) -> None:
    await make_product(("A", 5))
    body = {"lines": [{"sku": "A", "quantity": 4}]}
    assert (await client.post("/v1/holds", json=body, headers=admin.headers)).status_code == 201
    response = await client.post(
        "/v1/inventory/A/adjustments",
        json={"delta": -2, "reason": "correction"},
        headers=admin.headers,
    )
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    assert (await client.get("/v1/inventory/A")).json()["on_hand"] == 5
    ok = await client.post(
        "/v1/inventory/A/adjustments",
        json={"delta": -1, "reason": "correction"},
        headers=admin.headers,
    )
    assert ok.json() == {"sku": "A", "on_hand": 4, "reserved": 4, "available": 0}


@pytest.mark.parametrize(
    "body",
    [
        {"delta": 0, "reason": "restock"},
        {"delta": 1, "reason": "because"},
        {"delta": "5", "reason": "restock"},
        {"delta": 2**64, "reason": "restock"},
        {"delta": 1.5, "reason": "restock"},
        {"reason": "restock"},
    ],
)
async def test_bad_adjustments_are_422(client, admin, make_product, body) -> None:
    await make_product(("A", 5))
    response = await client.post("/v1/inventory/A/adjustments", json=body, headers=admin.headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


async def test_vendors_manage_only_their_own_skus(client, make_user, make_product) -> None:
    mine, theirs = await make_user("vendor"), await make_user("vendor")
    await make_product(("MINE", 5), owner=mine)
    await make_product(("THEIRS", 5), owner=theirs)
    body = {"delta": 1, "reason": "restock"}
    ok = await client.post("/v1/inventory/MINE/adjustments", json=body, headers=mine.headers)
    assert ok.status_code == 200
    other = await client.post("/v1/inventory/THEIRS/adjustments", json=body, headers=mine.headers)
    assert other.status_code == 404
    ledger = await client.get("/v1/inventory/THEIRS/movements", headers=mine.headers)
    assert ledger.status_code == 404
    customer = await make_user("customer")
    denied = await client.post(
        "/v1/inventory/MINE/adjustments", json=body, headers=customer.headers
    )
    assert denied.status_code == 403


async def test_low_stock_lists_variants_at_or_below_threshold(
    client, admin, make_user, make_product
) -> None:
    vendor = await make_user("vendor")
    await make_product(("LOW", 2), ("OK", 50), threshold=3)
    await make_product(("VLOW", 1), threshold=1, owner=vendor)
    everything = await client.get("/v1/inventory/low-stock", headers=admin.headers)
    assert [item["sku"] for item in everything.json()["data"]] == ["LOW", "VLOW"]
    own = await client.get("/v1/inventory/low-stock", headers=vendor.headers)
    assert [item["sku"] for item in own.json()["data"]] == ["VLOW"]
    page = await client.get("/v1/inventory/low-stock?limit=1", headers=admin.headers)
    assert [item["sku"] for item in page.json()["data"]] == ["LOW"]
    rest = await client.get(
        f"/v1/inventory/low-stock?limit=1&cursor={page.json()['next_cursor']}",
        headers=admin.headers,
    )
    assert [item["sku"] for item in rest.json()["data"]] == ["VLOW"]
    assert rest.json()["next_cursor"] is None


async def test_movements_paginate(client, admin, make_product) -> None:
    await make_product(("A", 5))
    for _ in range(4):
        await client.post(
            "/v1/inventory/A/adjustments",
            json={"delta": 1, "reason": "restock"},
            headers=admin.headers,
        )
    seen, cursor = [], None
    while True:
        url = "/v1/inventory/A/movements?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get(url, headers=admin.headers)).json()
        seen += [m["id"] for m in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5 and seen == sorted(seen)


async def test_ledger_refuses_update_and_delete(db, client, make_product) -> None:
    await make_product(("A", 5))
    for statement in (
        "UPDATE stock_movements SET on_hand_delta = 99",
        "DELETE FROM stock_movements",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with db.transaction() as session:
                await session.execute(text(statement))
    async with db.read() as session:
        rows = (await session.execute(text("SELECT on_hand_delta FROM stock_movements"))).all()
    assert [row[0] for row in rows] == [5]


async def test_check_constraints_refuse_oversell_even_from_raw_sql(db, make_product) -> None:
    await make_product(("A", 5))
    for statement, constraint in (
        ("UPDATE stock_levels SET reserved = on_hand + 1", "reserved_within_on_hand"),
        ("UPDATE stock_levels SET reserved = -1", "reserved_not_negative"),
    ):
        # PostgreSQL names the constraint; SQLite says which CHECK failed by its expression.
        with pytest.raises(DBAPIError, match=f"{constraint}|CHECK constraint failed"):
            async with db.transaction() as session:
                await session.execute(text(statement))


async def test_restock_service_adds_units_with_a_ledger_entry(db, make_product) -> None:
    from kassa.inventory import ledger, service

    await make_product(("A", 2))
    level = await db.run(lambda s: service.restock(s, sku="A", quantity=3, actor_id=None))
    assert (level.on_hand, level.reserved, level.available) == (5, 0, 5)
    with pytest.raises(ValueError):
        await db.run(lambda s: service.restock(s, sku="A", quantity=0, actor_id=None))
    async with db.read() as session:
        assert await ledger.replay(session) == {"A": (5, 0)}
        kinds = [m.kind for m in await ledger.list_movements(session, "A", limit=10, after_id=None)]
    assert kinds == ["initial", "restock"]
