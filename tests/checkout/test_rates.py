"""Coupons, shipping and tax rates: admin endpoints, and a usage limit no race can exceed."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from kassa import clock
from kassa.checkout import rates
from kassa.checkout.pricing import CouponNotApplicable
from kassa.db import Database


async def test_admins_manage_coupons(client, admin, make_user) -> None:
    body = {"code": "welcome10", "kind": "percent", "value": 10, "usage_limit": 5}
    created = await client.post("/v1/admin/coupons", json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    assert (created.json()["code"], created.json()["times_used"]) == ("WELCOME10", 0)
    again = await client.post("/v1/admin/coupons", json=body, headers=admin.headers)
    assert (again.status_code, again.json()["code"]) == (409, "conflict")
    for bad in (
        {"code": "X", "kind": "percent", "value": 101},
        {"code": "X", "kind": "fixed", "value": 500},  # no currency
        {"code": "X", "kind": "fixed", "value": 0, "currency": "eur"},
        {"code": "X", "kind": "percent", "value": 5, "expires_at": "2026-12-01T00:00:00"},
        {"code": "bad code", "kind": "percent", "value": 5},
    ):
        response = await client.post("/v1/admin/coupons", json=bad, headers=admin.headers)
        assert response.status_code == 422, bad
    patched = await client.patch(
        "/v1/admin/coupons/welcome10",
        json={"active": False, "expires_at": "2026-12-01T00:00:00Z"},
        headers=admin.headers,
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["active"], patched.json()["expires_at"]) == (
        False,
        "2026-12-01T00:00:00Z",
    )
    cleared = await client.patch(
        "/v1/admin/coupons/WELCOME10", json={"expires_at": None}, headers=admin.headers
    )
    assert cleared.json()["expires_at"] is None
    listed = await client.get("/v1/admin/coupons", headers=admin.headers)
    assert [c["code"] for c in listed.json()["data"]] == ["WELCOME10"]
    customer = await make_user("customer")
    assert (await client.get("/v1/admin/coupons", headers=customer.headers)).status_code == 403


async def test_admins_manage_shipping_and_tax_rates(client, admin, db) -> None:
    put = await client.put(
        "/v1/admin/shipping-rates/de",
        json={"amount": 495, "free_above_amount": 5000},
        headers=admin.headers,
    )
    assert put.json() == {
        "country": "de",
        "currency": "usd",
        "amount": 495,
        "free_above_amount": 5000,
    }
    changed = await client.put(
        "/v1/admin/shipping-rates/de", json={"amount": 595}, headers=admin.headers
    )
    assert changed.json() == {
        "country": "de",
        "currency": "usd",
        "amount": 595,
        "free_above_amount": None,
    }
    # Another currency's rate for the same country is a rate of its own.
    eur = await client.put(
        "/v1/admin/shipping-rates/de",
        json={"amount": 450, "currency": "eur"},
        headers=admin.headers,
    )
    assert (eur.json()["currency"], eur.json()["amount"]) == ("eur", 450)
    tax = await client.put(
        "/v1/admin/tax-rates/de", json={"basis_points": 1900}, headers=admin.headers
    )
    assert tax.json() == {"country": "de", "basis_points": 1900}
    assert (
        await client.put(
            "/v1/admin/tax-rates/de", json={"basis_points": 10_001}, headers=admin.headers
        )
    ).status_code == 422
    assert (
        await client.put("/v1/admin/tax-rates/DEU", json={"basis_points": 1}, headers=admin.headers)
    ).status_code == 422
    async with db.read() as session:
        terms = await rates.shipping_terms(session, "de", "usd")
        assert terms is not None and terms.amount == 595
        euro_terms = await rates.shipping_terms(session, "de", "eur")
        assert euro_terms is not None and euro_terms.amount == 450
        assert await rates.shipping_terms(session, "de", "inr") is None
        assert await rates.tax_basis_points(session, "de") == 1900
        assert await rates.tax_basis_points(session, "fr") == 0
    listed = await client.get("/v1/admin/shipping-rates", headers=admin.headers)
    assert sorted((r["country"], r["currency"]) for r in listed.json()) == [
        ("de", "eur"),
        ("de", "usd"),
    ]
    assert (
        await client.delete("/v1/admin/shipping-rates/de?currency=eur", headers=admin.headers)
    ).status_code == 204
    assert (
        await client.delete("/v1/admin/shipping-rates/de", headers=admin.headers)
    ).status_code == 204
    assert (
        await client.delete("/v1/admin/shipping-rates/de", headers=admin.headers)
    ).status_code == 404


async def test_coupon_usage_limit_holds_under_concurrency(db_url: str, db: Database) -> None:
    await db.run(
        lambda s: rates.create_coupon(
            s,
            code="FLASH",
            kind="percent",
            value=50,
            currency=None,
            min_subtotal_amount=0,
            expires_at=None,
            usage_limit=10,
        )
    )
    # Separate engines, so the redemptions really race on PostgreSQL.
    engines = [Database(db_url, pool_size=10) for _ in range(2)]
    outcomes: list[str] = []

    async def redeem(engine: Database) -> None:
        try:
            await engine.run(lambda s: rates.redeem_coupon(s, "flash"))
            outcomes.append("ok")
        except CouponNotApplicable as error:
            outcomes.append(error.extra["reason"])

    try:
        await asyncio.gather(*(redeem(engines[i % 2]) for i in range(60)))
    finally:
        for engine in engines:
            await engine.dispose()
    assert outcomes.count("ok") == 10
    assert outcomes.count("used_up") == 50
    async with db.read() as session:
        coupon = (await rates.list_coupons(session, limit=1, after=None))[0]
    assert coupon.times_used == 10


async def test_redeeming_an_expired_or_unknown_coupon(db: Database) -> None:
    await db.run(
        lambda s: rates.create_coupon(
            s,
            code="SOON",
            kind="fixed",
            value=100,
            currency="usd",
            min_subtotal_amount=0,
            expires_at=clock.now() + timedelta(seconds=10),
            usage_limit=None,
        )
    )
    await db.run(lambda s: rates.redeem_coupon(s, "soon"))
    for code, now, reason in (
        ("SOON", clock.now() + timedelta(seconds=11), "expired"),
        ("NOPE", None, "unknown"),
    ):
        with pytest.raises(CouponNotApplicable) as caught:
            await db.run(lambda s, c=code, n=now: rates.redeem_coupon(s, c, now=n))
        assert caught.value.extra["reason"] == reason
    async with db.read() as session:
        terms = await rates.find_coupon(session, "soon")
    assert (terms.kind, terms.value, terms.currency) == ("fixed", 100, "usd")
