"""A flash sale over HTTP: 200 buyers for 20 units, served by two `kassa serve` processes on one
PostgreSQL database.

Every buyer fills a cart first (one unit each, while all 20 are still there), then all 200 check
out at once, half on each server. The 20 who get a checkout pay with the good card; the sandbox
payment comes back as a signed webhook delivered by whichever server's outbox loop claims it.
At the end: 20 orders, the stock sold out with nothing reserved, every paid payment with its
order, every order with its stock committed in the ledger, and 180 buyers told
409 insufficient_stock.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from kassa.db import Database
from tests.torture._servers import (
    Buyer,
    Server,
    admin_headers,
    broken_promises,
    client,
    deadlocks,
    fresh_postgres,
    open_shop,
    read_books,
    server_env,
    wait_for_payments,
)

pytestmark = pytest.mark.torture

SKU = "FLASH-1"
UNITS = 20
BUYERS = 200
SERVERS = 2


async def test_flash_sale_200_buyers_20_units_two_servers_one_database(tmp_path: Path) -> None:
    async with fresh_postgres("flash") as url:
        env = server_env(
            tmp_path,
            url,
            outbox_interval_seconds="0.2",
            sweep_interval_seconds="1",
            database_pool_size="10",
        )
        servers = [Server(f"server{k}", tmp_path, env) for k in range(SERVERS)]
        buyers = [
            Buyer(n, client(servers[n % SERVERS].url), servers[n % SERVERS].name)
            for n in range(BUYERS)
        ]
        shop = client(servers[0].url)
        db = Database(url, pool_size=2)
        try:
            for server in servers:
                server.start()
            await asyncio.gather(*(server.ready() for server in servers))
            admin = await admin_headers(shop)
            await open_shop(shop, admin, SKU, UNITS)
            filled = await asyncio.gather(*(buyer.fill_cart(SKU) for buyer in buyers))
            assert Counter(filled) == {"ok": BUYERS}

            deadlocks_before = await deadlocks(db)
            started = time.monotonic()
            await asyncio.gather(*(buyer.check_out() for buyer in buyers))
            checked_out = time.monotonic()
            winners = [buyer for buyer in buyers if buyer.checkout_answer == "201"]
            paid = await asyncio.gather(*(buyer.pay() for buyer in winners))
            statuses = await wait_for_payments(winners, until=("succeeded",), within=30)
            settled = time.monotonic()

            per_server = {
                server.name: dict(
                    Counter(b.checkout_answer for b in buyers if b.server == server.name)
                )
                for server in servers
            }
            books = await read_books(db)
            print(
                f"\nflash sale: checkout answers per server {per_server}; "
                f"pay answers {dict(Counter(b.pay_answer for b in winners))}; "
                f"payments {dict(Counter(statuses.values()))}; orders {len(books.orders)}; "
                f"stock (on_hand, reserved) {books.levels[SKU]}; outbox {dict(books.outbox)}; "
                f"seconds: checkouts {checked_out - started:.2f}, "
                f"to the last succeeded payment {settled - started:.2f}"
            )

            answers = Counter(buyer.checkout_answer for buyer in buyers)
            assert answers == {"201": UNITS, "409 insufficient_stock": BUYERS - UNITS}
            assert [response.status_code for response in paid] == [202] * UNITS
            assert Counter(statuses.values()) == {"succeeded": UNITS}

            assert len(books.orders) == UNITS
            assert books.levels[SKU] == (0, 0)
            assert broken_promises(books, SKU, UNITS) == []
            assert sum(books.commits().values()) == UNITS
            succeeded = {p for p, pay in books.payments.items() if pay["status"] == "succeeded"}
            assert succeeded == {buyer.payment_id for buyer in winners}
            ordered = {order["checkout_id"] for order in books.orders.values()}
            assert ordered == {buyer.checkout_id for buyer in winners}
            assert {pay["checkout_id"] for pay in books.payments.values()} == ordered
            assert [s.log_problems() for s in servers] == [[]] * SERVERS
            # Retried deadlocks would pass unseen above; PostgreSQL counts every one (a backend
            # reports its counts when it ends, so the servers stop first).
            for server in servers:
                server.stop()
            await asyncio.sleep(0.5)
            assert await deadlocks(db) == deadlocks_before
        finally:
            for http in [shop, *(buyer.http for buyer in buyers)]:
                await http.aclose()
            for server in servers:
                server.stop()
            await db.dispose()
