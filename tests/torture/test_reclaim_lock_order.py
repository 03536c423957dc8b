"""Promise 2 under lazy reclaim: a reclaim that gives units back on other SKUs keeps the lock order.

The interleaving (found by review, reproduced here deterministically): an overdue hold holds B and
Z. Buyer T2, whose clock is just before that hold's expiry (so it sees nothing overdue), takes C
and then Z. Buyer T1, just after the expiry, wants B and C: it reclaims the overdue hold (B and Z)
and then takes C. If the reclaim locked B, then Z, then wanted C, T1 (holding Z, waiting for C)
and T2 (holding C, waiting for Z) would deadlock. T2 pauses between its two lines, in its own
thread and event loop, so that T1 arrives exactly then.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from kassa import clock
from kassa.db import Database
from kassa.inventory.holds import hold_stock
from tests.torture._engine import RetryCounter, describe, fast_deadlock_detection
from tests.torture._support import replayed, seed_stock, stock_levels

pytestmark = pytest.mark.torture


def _second_buyer(url: str, at: datetime, started: threading.Event, out: list[str]) -> None:
    async def buy() -> None:
        db = fast_deadlock_detection(Database(url, pool_size=1))

        @event.listens_for(db.engine.sync_engine, "before_cursor_execute")
        def pause_before_z(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
            if statement.startswith("UPDATE stock_levels") and "Z" in str(params):
                started.set()  # C is taken (and locked); let the other buyer run into it
                time.sleep(1.0)

        try:
            async with db.transaction() as session:
                await hold_stock(session, [("C", 1), ("Z", 1)], ttl_seconds=900, now=at)
            out.append("T2 ok")
        except Exception as error:
            out.append(f"T2 {describe(error)}")
        finally:
            await db.dispose()

    asyncio.run(buy())


async def test_reclaim_before_take_keeps_the_lock_order(
    db_url: str, db: Database, retries: RetryCounter
) -> None:
    await seed_stock(db, {"B": 10, "C": 10, "Z": 10})
    now = clock.now()
    overdue = await db.run(lambda s: hold_stock(s, [("B", 1), ("Z", 1)], ttl_seconds=60, now=now))

    out: list[str] = []
    started = threading.Event()
    second = threading.Thread(
        target=_second_buyer,
        args=(db_url, overdue.expires_at - timedelta(seconds=1), started, out),
    )
    second.start()
    try:
        assert await asyncio.to_thread(started.wait, 30)
        first = fast_deadlock_detection(Database(db_url, pool_size=1))
        try:
            async with first.transaction() as session:
                await hold_stock(
                    session,
                    [("B", 1), ("C", 1)],
                    ttl_seconds=900,
                    now=overdue.expires_at + timedelta(seconds=1),
                )
            out.append("T1 ok")
        except Exception as error:
            out.append(f"T1 {describe(error)}")
        finally:
            await first.dispose()
    finally:
        await asyncio.to_thread(second.join, 30)

    assert sorted(out) == ["T1 ok", "T2 ok"]
    # The overdue hold gave back B and Z; T1 holds B and C, T2 holds C and Z.
    assert await stock_levels(db) == {"B": (10, 1), "C": (10, 2), "Z": (10, 1)}
    assert await replayed(db) == await stock_levels(db)
