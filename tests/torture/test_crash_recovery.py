"""Promise 7, nothing is lost on a crash: a `kassa serve` killed with SIGKILL in the middle of a
sale, then started again on the same database (a SQLite file, and PostgreSQL).

120 buyers fill a cart each (one unit of 50), then all check out at once; two in three pay with
the good card as soon as they have a checkout, the rest abandon it. When 40 checkouts have been
answered the server is killed (requests in flight, the outbox maybe half-way through a webhook)
and started again; a buyer whose request died tries once more against the new process (a
checkout that was made but never answered shows up as 409 checkout_active, and the buyer goes on
with it). Buyers' failures are counted, not asserted on.

Holds live 3 s (6 s once paid). After the last expiry plus two sweep intervals the restarted
server's own sweeper must have brought the books back: every unit is sold (in an order, committed
in the ledger) or available again; nothing is reserved; no hold is active for a checkout that is
not open; every paid payment has its order or is refunded in full; the ledger replays to the
stock levels and never went below zero.

The outbox messages the killed process had claimed stay leased for `kassa.outbox.service.LEASE`
(60 s) before anyone delivers them again. Rather than wait a minute, the test moves the due time
of those leases to now (what the passing of the lease would do), has the outbox drained, and
checks the books again: every payment whose pay request was answered 202 is then settled.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from kassa.db import Database
from kassa.inventory.holds import holds
from kassa.outbox.models import OutboxMessage
from tests.torture._servers import (
    PAID,
    Buyer,
    Server,
    admin_headers,
    broken_promises,
    client,
    code_of,
    fresh_database,
    open_shop,
    read_books,
    server_env,
)

pytestmark = pytest.mark.torture

SKU = "CRASH-1"
UNITS = 50
BUYERS = 120
KILL_AFTER = 40  # checkouts answered before the SIGKILL
KILL_AFTER_PAID = 10  # and payments accepted, so that webhooks are on their way
TTL, MAX_TTL, SWEEP_INTERVAL = 3, 6, 1.0
ATTEMPTS = 3  # per request: the first, and again after the restart


def pays(buyer: Buyer) -> bool:
    return buyer.n % 3 != 0


def states(rows: dict[str, dict[str, Any]]) -> dict[str, int]:
    """How many rows are in each state (or status)."""
    return dict(Counter(str(row.get("state", row.get("status"))) for row in rows.values()))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_server_killed_mid_sale_restarted_books_agree_after_ttl(
    backend: str, tmp_path: Path
) -> None:
    async with fresh_database(backend, "crash", tmp_path) as url:
        env = server_env(
            tmp_path,
            url,
            hold_ttl_seconds=str(TTL),
            hold_max_ttl_seconds=str(MAX_TTL),
            sweep_interval_seconds=str(SWEEP_INTERVAL),
            outbox_interval_seconds="0.2",
            database_pool_size="10",
        )
        server = Server("server", tmp_path, env)
        http = client(server.url, timeout=30)
        buyers = [Buyer(n, client(server.url, timeout=30), server.name) for n in range(BUYERS)]
        db = Database(url, pool_size=2)
        try:
            server.start()
            await server.ready()
            admin = await admin_headers(http)
            await open_shop(http, admin, SKU, UNITS)
            filled = await asyncio.gather(*(buyer.fill_cart(SKU) for buyer in buyers))
            assert Counter(filled) == {"ok": BUYERS}

            answered = accepted = 0
            enough, back = asyncio.Event(), asyncio.Event()
            failures: Counter[str] = Counter()
            timings: dict[str, float] = {}

            async def attempt(buyer: Buyer, step: str, call):  # type: ignore[no-untyped-def]
                for _ in range(ATTEMPTS):
                    try:
                        return await call()
                    except httpx.TransportError as error:
                        failures[f"{step}: {type(error).__name__}"] += 1
                        buyer.story.append(f"{step} {type(error).__name__}")
                        await back.wait()
                failures[f"{step}: gave up"] += 1
                return None

            def ripe() -> None:
                if answered >= KILL_AFTER and accepted >= KILL_AFTER_PAID:
                    enough.set()

            async def shop(buyer: Buyer) -> None:
                nonlocal answered, accepted
                response = await attempt(buyer, "checkout", buyer.check_out)
                if response is None:
                    return
                if not back.is_set():
                    answered += 1
                    ripe()
                if code_of(response) == "409 checkout_active":
                    # Made before the crash, never answered: go on with it.
                    found = await attempt(
                        buyer,
                        "find",
                        lambda: buyer.http.get(
                            f"/v1/checkouts/{response.json()['checkout_id']}",
                            headers=buyer.access,
                        ),
                    )
                    if found is not None and found.status_code == 200:
                        buyer.checkout_id = found.json()["id"]
                        buyer.payment_id = found.json()["payment"]["id"]
                if buyer.payment_id is not None and pays(buyer):
                    paid = await attempt(buyer, "pay", buyer.pay)
                    if paid is not None and paid.status_code == 202 and not back.is_set():
                        accepted += 1
                        ripe()

            async def crash() -> None:
                await enough.wait()
                t0 = time.monotonic()
                try:
                    server.kill()
                    timings["killed at"] = t0 - started
                    server.start()
                    timings["restart took"] = await server.ready()
                finally:
                    back.set()  # buyers waiting to try again go on (and fail, if need be)

            started = time.monotonic()
            killer = asyncio.create_task(crash())
            await asyncio.gather(*(shop(buyer) for buyer in buyers))
            timings["buyers done"] = time.monotonic() - started
            # A sale over before the moment came gets its kill now (and fails below: nothing
            # was in flight).
            enough.set()
            await killer

            # The restarted server's own sweeper: past the last expiry, plus two intervals.
            async with db.read() as session:
                last_expiry = await session.scalar(
                    select(func.max(holds.c.expires_at)).where(holds.c.state == "active")
                )
            if last_expiry is not None:
                wait = (last_expiry - datetime.now(UTC)).total_seconds() + 2 * SWEEP_INTERVAL
                await asyncio.sleep(max(wait, 0) + 0.5)
            timings["after ttl"] = time.monotonic() - started
            after_ttl = await read_books(db)

            # The leases of what the dead process was delivering: let them run out now.
            async with db.transaction() as session:
                now = datetime.now(UTC)
                released = (
                    await session.execute(
                        update(OutboxMessage)
                        .where(
                            OutboxMessage.state == "pending",
                            OutboxMessage.next_attempt_at > now + timedelta(seconds=20),
                        )
                        .values(next_attempt_at=now)
                        .returning(OutboxMessage.id)
                    )
                ).all()
            deadline = time.monotonic() + 30
            drained = 0
            while time.monotonic() < deadline:
                response = await http.post("/v1/admin/jobs/outbox", headers=admin)
                assert response.status_code == 200, response.text
                drained += response.json()["attempted"]
                if (await read_books(db)).outbox.get("pending", 0) == 0:
                    break
                await asyncio.sleep(0.5)
            sweep = await http.post("/v1/admin/jobs/sweep", headers=admin)
            assert sweep.status_code == 200, sweep.text
            timings["settled"] = time.monotonic() - started
            books = await read_books(db)

            sold = sum(books.commits().values())
            print(
                "\ncrash recovery: "
                f"buyers {dict(Counter(' > '.join(b.story) for b in buyers).most_common())}; "
                f"transport failures {dict(failures)}; "
                f"after the TTL: stock {after_ttl.levels[SKU]}, holds {states(after_ttl.holds)}, "
                f"checkouts {states(after_ttl.checkouts)}, "
                f"payments {states(after_ttl.payments)}, orders {len(after_ttl.orders)}; "
                f"leases let run out {len(released)}, outbox attempts {drained}; "
                f"settled: stock {books.levels[SKU]}, sold {sold}, orders {len(books.orders)}, "
                f"payments {states(books.payments)}, refunds {len(books.refunds)}, "
                f"holds {states(books.holds)}, outbox {dict(books.outbox)}; "
                f"sweep {sweep.json()}; seconds { ({k: round(v, 2) for k, v in timings.items()}) }"
            )

            assert "killed at" in timings, "the server was never killed"
            assert sum(failures.values()) > 0, "no request was in flight at the SIGKILL"
            assert any(b.pay_answer == "202" for b in buyers), "nobody could pay"
            # After the TTL, before anything else: the restarted server alone put it right.
            assert broken_promises(after_ttl, SKU, UNITS) == []
            assert after_ttl.levels[SKU][1] == 0
            assert after_ttl.units_held(SKU) == 0
            assert [c for c, row in after_ttl.checkouts.items() if row["state"] == "open"] == []
            # After the outbox has delivered what the dead process had claimed.
            assert broken_promises(books, SKU, UNITS) == []
            assert books.levels[SKU][1] == 0
            assert books.outbox.get("pending", 0) == 0 and books.outbox.get("dead", 0) == 0
            accepted = {b.payment_id for b in buyers if b.pay_answer == "202"}
            unsettled = {p for p in accepted if books.payments[p]["status"] not in PAID}
            assert unsettled == set()
            assert len(books.orders) <= UNITS
            assert server.log_problems() == []
        finally:
            for each in [http, *(buyer.http for buyer in buyers)]:
                await each.aclose()
            server.stop()
            await db.dispose()
