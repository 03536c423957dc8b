"""Promises 1, 2 and 6 with real servers: multi-line carts over overlapping SKUs and a coupon with
a usage limit, bought at once through two `kassa serve` processes on one PostgreSQL.

120 buyers fill a cart each with one to three of three SKUs (70 units each; one or two of each),
half of them with a 10 % coupon that may be used 15 times, then all check out at once and the
winners pay. Every line of a checkout is held or none is; no SKU is oversold; the coupon is used
exactly as often as the checkouts that got it; every paid checkout is one order whose lines left
stock through the ledger; and PostgreSQL counts no deadlock, although every checkout locks its
cart, the coupon and several stock rows, and completions lock them again in their own order.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from kassa.checkout.models import Coupon
from kassa.db import Database
from tests.checkout.flow import ADDRESS, GOOD_CARD
from tests.torture._servers import (
    Server,
    admin_headers,
    client,
    code_of,
    deadlocks,
    fresh_postgres,
    read_books,
    server_env,
)

pytestmark = pytest.mark.torture

SKUS = ("MIX-A", "MIX-B", "MIX-C")
UNITS = 70
BUYERS = 120
COUPON, COUPON_USES = "MIX", 15
SERVERS = 2


async def stock_shop(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await http.put("/v1/admin/shipping-rates/us", json={"amount": 500}, headers=admin)
    assert response.status_code == 200, response.text
    product = {
        "name": "Mixed",
        "slug": "mixed",
        "variants": [
            {"sku": sku, "name": sku, "price_amount": 1000 + 100 * n, "on_hand": UNITS}
            for n, sku in enumerate(SKUS)
        ],
    }
    response = await http.post("/v1/products", json=product, headers=admin)
    assert response.status_code == 201, response.text
    coupon = {"code": COUPON, "kind": "percent", "value": 10, "usage_limit": COUPON_USES}
    response = await http.post("/v1/admin/coupons", json=coupon, headers=admin)
    assert response.status_code == 201, response.text


async def fill_cart(
    http: httpx.AsyncClient, lines: list[tuple[str, int]]
) -> tuple[str, dict[str, str]]:
    """A guest cart with `lines`; returns its id and the header that opens it."""
    cart = (await http.post("/v1/carts")).json()
    guest = {"X-Cart-Token": cart["token"]}
    for sku, quantity in lines:
        added = await http.post(
            f"/v1/carts/{cart['id']}/items", json={"sku": sku, "quantity": quantity}, headers=guest
        )
        assert added.status_code == 200, added.text
    return cart["id"], guest


async def test_mixed_carts_and_a_coupon_through_two_servers(tmp_path: Path) -> None:
    rng = random.Random(7)
    wanted = [
        sorted((sku, rng.randint(1, 2)) for sku in rng.sample(SKUS, rng.randint(1, 3)))
        for _ in range(BUYERS)
    ]
    async with fresh_postgres("mixed") as url:
        env = server_env(tmp_path, url, outbox_interval_seconds="0.2", sweep_interval_seconds="1")
        servers = [Server(f"server{k}", tmp_path, env) for k in range(SERVERS)]
        clients = [client(servers[n % SERVERS].url) for n in range(BUYERS)]
        db = Database(url, pool_size=2)
        try:
            for server in servers:
                server.start()
            await asyncio.gather(*(server.ready() for server in servers))
            admin = await admin_headers(clients[0])
            await stock_shop(clients[0], admin)
            carts = await asyncio.gather(*(fill_cart(clients[n], wanted[n]) for n in range(BUYERS)))
            before = await deadlocks(db)

            async def check_out(n: int) -> httpx.Response:
                cart_id, guest = carts[n]
                body = {
                    "cart_id": cart_id,
                    "email": f"mix{n}@example.com",
                    "shipping_address": ADDRESS,
                }
                if n % 2 == 0:
                    body["coupon_code"] = COUPON
                return await clients[n].post("/v1/checkouts", json=body, headers=guest)

            answers = await asyncio.gather(*(check_out(n) for n in range(BUYERS)))
            winners = [n for n, r in enumerate(answers) if r.status_code == 201]
            paid = await asyncio.gather(
                *(
                    clients[n].post(
                        f"/v1/sandbox/payments/{answers[n].json()['payment']['id']}/pay",
                        json={"card_number": GOOD_CARD},
                        headers=carts[n][1],
                    )
                    for n in winners
                )
            )
            assert [r.status_code for r in paid] == [202] * len(winners)
            for _ in range(120):
                books = await read_books(db)
                if len(books.orders) == len(winners):
                    break
                await asyncio.sleep(0.25)
            books = await read_books(db)
            async with db.read() as session:
                used = await session.scalar(select(Coupon.times_used).where(Coupon.code == COUPON))

            codes = Counter(code_of(r) for r in answers)
            print(
                f"\nmixed sale: checkout answers {dict(codes)}; orders {len(books.orders)}; "
                f"coupon used {used} of {COUPON_USES}; stock {books.levels}"
            )
            assert set(codes) <= {"201", "409 insufficient_stock", "422 coupon_not_applicable"}
            with_coupon = [n for n in winners if n % 2 == 0]
            assert used == len(with_coupon) <= COUPON_USES
            assert all(answers[n].json()["discount_amount"] > 0 for n in with_coupon)
            assert len(books.orders) == len(winners)
            # Every held checkout got all of its lines, and each SKU's units add up.
            sold: dict[str, int] = defaultdict(int)
            for n in winners:
                checkout = answers[n].json()
                assert sorted((ln["sku"], ln["quantity"]) for ln in checkout["lines"]) == wanted[n]
                for sku, quantity in wanted[n]:
                    sold[sku] += quantity
            committed: dict[str, int] = defaultdict(int)
            for row in books.movements:
                if row["kind"] == "commit":
                    committed[row["sku"]] -= int(row["on_hand_delta"])
            for sku in SKUS:
                on_hand, reserved = books.levels[sku]
                assert reserved == 0 and on_hand >= 0, (sku, on_hand, reserved)
                assert committed[sku] == sold[sku] == UNITS - on_hand, sku
            assert books.replayed() == books.levels
            assert books.ledger_violations() == []
            assert {
                p["status"]
                for p in books.payments.values()
                if p["checkout_id"] in {answers[n].json()["id"] for n in winners}
            } == {"succeeded"}
            assert [s.log_problems() for s in servers] == [[]] * SERVERS
            for server in servers:
                server.stop()
            await asyncio.sleep(0.5)
            assert await deadlocks(db) == before
        finally:
            for http in clients:
                await http.aclose()
            for server in servers:
                server.stop()
            await db.dispose()
