"""A `kassa serve` killed with SIGKILL while a checkout start waits for the payment provider:
after Stripe made the PaymentIntent, before Kassa stored its answer. Restarted, nothing is lost:
the stock is still held for the buyer, and when the buyer pays, Stripe's webhook (its metadata
names Kassa's payment) finds the payment that never learned its reference, and the purchase
completes, exactly once, with its stock committed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from kassa.db import Database
from kassa.payments.models import Payment
from tests.providers.fake_stripe import FakeStripe, signed
from tests.providers.local_server import LocalServer
from tests.torture._servers import (
    Buyer,
    Server,
    admin_headers,
    broken_promises,
    client,
    fresh_database,
    open_shop,
    read_books,
)
from tests.torture.test_slow_provider import stripe_env

pytestmark = pytest.mark.torture

SKU = "KILL-PSP"
UNITS = 3


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_killed_between_the_provider_call_and_storing_its_answer(
    tmp_path: Path, backend: str
) -> None:
    fake = FakeStripe()
    fake.delay = 30.0  # the answer never comes back before the kill
    stripe = LocalServer(fake.app).start()
    async with fresh_database(backend, "killpsp", tmp_path) as url:
        env = stripe_env(tmp_path, url, stripe.url) | {"KASSA_HOLD_TTL_SECONDS": "900"}
        server = Server("server", tmp_path, env)
        db = Database(url, pool_size=2)
        buyer = None
        try:
            server.start()
            await server.ready()
            async with client(server.url) as shop:
                admin = await admin_headers(shop)
                await open_shop(shop, admin, SKU, UNITS)
            buyer = Buyer(1, client(server.url, timeout=60), "server")
            assert await buyer.fill_cart(SKU) == "ok"
            attempt = asyncio.create_task(buyer.check_out())
            deadline = time.monotonic() + 20
            while not fake.intents:  # Stripe has made the PaymentIntent and is slow to answer
                assert time.monotonic() < deadline, server.log_tail()
                await asyncio.sleep(0.05)
            server.kill()
            answer = await asyncio.gather(attempt, return_exceptions=True)
            assert isinstance(answer[0], Exception)  # the connection dropped: no answer
            [intent] = fake.intents.values()
            async with db.read() as session:
                [payment] = (await session.execute(select(Payment))).scalars()
            assert (payment.status, payment.provider_reference) == ("creating", None)
            assert intent["metadata"]["kassa_payment_id"] == payment.id
            assert (await read_books(db)).levels[SKU] == (UNITS, 1)  # still held for the buyer

            fake.delay = 0
            server.start()
            await server.ready()
            # The buyer pays (Stripe.js had the intent); Stripe tells Kassa, three times over.
            body, headers = signed(fake.pay(intent["id"]))
            async with client(server.url) as http:
                answers = await asyncio.gather(
                    *(
                        http.post("/v1/webhooks/stripe", content=body, headers=headers)
                        for _ in range(3)
                    )
                )
            assert [a.status_code for a in answers] == [200] * 3, [a.text for a in answers]
            assert sorted(a.json()["outcome"] for a in answers) == [
                "duplicate",
                "duplicate",
                "processed",
            ]
            books = await read_books(db)
            assert len(books.orders) == 1
            [order] = books.orders.values()
            assert books.payments[order["payment_id"]]["status"] == "succeeded"
            assert books.levels[SKU] == (UNITS - 1, 0)
            assert broken_promises(books, SKU, UNITS) == []
            assert server.log_problems() == [], server.log_tail()
        finally:
            if buyer is not None:
                await buyer.http.aclose()
            server.stop()
            await db.dispose()
            stripe.stop()
