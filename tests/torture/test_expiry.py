"""Promise 3, a hold never outlives its TTL for a buyer who wants the stock.

Expired holds come back through racing sweepers (several engines and a second process, with
`FOR UPDATE SKIP LOCKED` on PostgreSQL) and through lazy reclaim by buyers who need their stock,
all at once; each expired hold must come back exactly once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest

from kassa import clock
from kassa.config import Settings
from kassa.db import Database
from kassa.errors import InvalidTransition
from kassa.inventory.holds import (
    InsufficientStock,
    commit_hold,
    get_hold,
    hold_stock,
    release_hold,
)
from kassa.ops.sweeper import run_sweep
from tests.torture._engine import RetryCounter, describe, fast_deadlock_detection, warm_up
from tests.torture._support import (
    Worker,
    hold_table,
    movement_rows,
    replayed,
    seed_stock,
    stock_levels,
    units_by_sku,
)

pytestmark = pytest.mark.torture

SKUS = [f"EXP-{i}" for i in range(4)]
UNITS = 20
HOLDS = 40  # hold k takes one unit of SKUS[k % 4] and one of SKUS[(k + 1) % 4]: all 80 units
COMMITTED = range(0, 4)
RELEASED = range(4, 8)
SWEEPERS = 4


async def _buy(db: Database, sku: str, outcomes: Counter[str], errors: list[str]) -> str | None:
    try:
        view = await db.run(lambda s: hold_stock(s, [(sku, 1)], ttl_seconds=900))
    except InsufficientStock:
        outcomes["refused"] += 1
        return None
    except Exception as error:
        errors.append(f"{type(error).__name__}: {error}")
        return None
    outcomes["held"] += 1
    return view.id


async def test_hold_never_outlives_ttl_sweepers_race_lazy_reclaim(
    db_url: str, db: Database, settings: Settings, retries: RetryCounter
) -> None:
    await seed_stock(db, dict.fromkeys(SKUS, UNITS))
    # The sweeper in another process connects first (starting Python takes longer than a TTL).
    remote = Worker("tests.torture.sweep", "--url", db_url, "--batch-size", "3")
    sweep_settings = settings.model_copy(update={"sweep_batch_size": 3})
    sweeper_dbs = [fast_deadlock_detection(Database(db_url, pool_size=2)) for _ in range(SWEEPERS)]
    buyers_db = fast_deadlock_detection(Database(db_url, pool_size=10))
    try:
        await remote.start()

        def lines(k: int) -> list[tuple[str, int]]:
            return [(SKUS[k % 4], 1), (SKUS[(k + 1) % 4], 1)]

        def ttl(k: int) -> int:
            # The holds to commit or release live long enough for that however slow the machine.
            return 900 if k in COMMITTED or k in RELEASED else 1

        views = await asyncio.gather(
            *(
                db.run(lambda s, k=k: hold_stock(s, lines(k), ttl_seconds=ttl(k)))
                for k in range(HOLDS)
            )
        )
        ids = [view.id for view in views]
        assert await stock_levels(db) == dict.fromkeys(SKUS, (UNITS, UNITS))
        # Not a moment too early: before its TTL is up, no sweeper touches a hold.
        first_due = min(view.expires_at for view in views)
        early = await run_sweep(db, settings)
        if clock.now() < first_due:
            assert early.expired_holds == 0
        for k in COMMITTED:
            await db.run(lambda s, k=k: commit_hold(s, ids[k]))
        for k in RELEASED:
            await db.run(lambda s, k=k: release_hold(s, ids[k]))
        # Committed: 2 units per SKU left; released: 2 per SKU free. The rest is held, due in 1 s.
        assert await stock_levels(db) == dict.fromkeys(SKUS, (UNITS - 2, UNITS - 4))

        # Every engine has its connections open before the start, so that the race is fair.
        await asyncio.gather(*(warm_up(d, 2) for d in sweeper_dbs), warm_up(buyers_db, 10))
        due = max(view.expires_at for k, view in enumerate(views) if ttl(k) == 1)
        await asyncio.sleep((due - clock.now()).total_seconds() + 0.2)

        # Every unit that is not committed can be had again; buyers ask for one more than that.
        wanted = UNITS - 2
        outcomes: Counter[str] = Counter()
        errors: list[str] = []
        remote.go()
        results = await asyncio.gather(
            *(run_sweep(sweeper_db, sweep_settings) for sweeper_db in sweeper_dbs),
            *(_buy(buyers_db, sku, outcomes, errors) for _ in range(wanted + 1) for sku in SKUS),
            return_exceptions=True,
        )
        remote_result = await remote.result()
    finally:
        await remote.stop()
        for extra in (*sweeper_dbs, buyers_db):
            await extra.dispose()

    sweeps = results[:SWEEPERS]
    assert [describe(r) for r in sweeps if isinstance(r, BaseException)] == []
    assert "error" not in remote_result, remote_result
    assert errors == []
    swept = [r.expired_holds for r in sweeps] + [remote_result["expired_holds"]]  # type: ignore[union-attr]
    print(
        f"\n{db.dialect}: buyers {dict(outcomes)}, swept per sweeper {swept}, "
        f"retried here {Counter(retries.errors)}, there {Counter(remote_result['retried'])}"
    )
    assert outcomes == {"held": wanted * len(SKUS), "refused": len(SKUS)}

    expired = [ids[k] for k in range(HOLDS) if k not in COMMITTED and k not in RELEASED]
    table = await hold_table(db)
    for k, hold_id in enumerate(ids):
        expected = "committed" if k in COMMITTED else "released" if k in RELEASED else "expired"
        assert table[hold_id]["state"] == expected, (k, table[hold_id])
    new_holds = {hold_id: hold for hold_id, hold in table.items() if hold_id not in ids}
    assert len(new_holds) == wanted * len(SKUS)
    assert all(hold["state"] == "active" for hold in new_holds.values())
    assert sum(swept) <= len(expired)

    # Exactly one expire movement per line of every expired hold, none for any other hold.
    rows = await movement_rows(db)
    expire_lines = Counter(
        (row["reference_id"], row["sku"]) for row in rows if row["kind"] == "expire"
    )
    assert expire_lines == Counter(
        (hold_id, sku) for hold_id in expired for sku, _ in table[hold_id]["lines"]
    )
    assert all(row["reserved_delta"] == -1 for row in rows if row["kind"] == "expire")

    levels = await stock_levels(db)
    assert levels == dict.fromkeys(SKUS, (UNITS - 2, UNITS - 2))
    assert {sku: reserved for sku, (_, reserved) in levels.items()} == units_by_sku(table, "active")
    assert await replayed(db) == levels
    # Hold rows first, then stock rows, everywhere: no deadlock, not even one a retry hid.
    assert retries.errors == []
    assert remote_result["retried"] == []


async def test_hold_never_outlives_ttl_lazy_reclaim_with_moved_clock(db: Database) -> None:
    await seed_stock(db, {"LAZY-1": 5, "LAZY-2": 4})
    short = await db.run(lambda s: hold_stock(s, [("LAZY-1", 3), ("LAZY-2", 1)], ttl_seconds=30))
    long = await db.run(lambda s: hold_stock(s, [("LAZY-1", 2)], ttl_seconds=600))
    with pytest.raises(InsufficientStock):
        await db.run(lambda s: hold_stock(s, [("LAZY-1", 1)], ttl_seconds=60))

    clock.advance(timedelta(seconds=31))
    # No sweeper: the buyer who needs the stock takes it back from the expired hold on the spot.
    fresh = await db.run(lambda s: hold_stock(s, [("LAZY-1", 3)], ttl_seconds=60))
    assert fresh.state == "active"
    assert (await db.run(lambda s: get_hold(s, short.id))).state == "expired"
    assert (await db.run(lambda s: get_hold(s, long.id))).state == "active"
    table = await hold_table(db)
    assert table[short.id]["state"] == "expired"  # really ended, not only seen as expired
    # The hold that is not due keeps its units: one more unit is not there.
    with pytest.raises(InsufficientStock):
        await db.run(lambda s: hold_stock(s, [("LAZY-1", 1)], ttl_seconds=60))
    # Both lines of the expired hold came back, the one on LAZY-2 as well.
    assert await stock_levels(db) == {"LAZY-1": (5, 5), "LAZY-2": (4, 0)}
    rows = await movement_rows(db)
    assert sorted((r["sku"], r["reserved_delta"]) for r in rows if r["kind"] == "expire") == [
        ("LAZY-1", -3),
        ("LAZY-2", -1),
    ]
    # Releasing an already expired hold is a no-op, committing it is refused.
    assert (await db.run(lambda s: release_hold(s, short.id))).state == "expired"
    with pytest.raises(InvalidTransition):
        await db.run(lambda s: commit_hold(s, short.id))
    assert await stock_levels(db) == {"LAZY-1": (5, 5), "LAZY-2": (4, 0)}
    assert await replayed(db) == await stock_levels(db)


async def test_hold_never_outlives_ttl_concurrent_buyers_lazy_reclaim(
    db: Database, retries: RetryCounter
) -> None:
    """Many buyers at once need the stock of expired holds, no sweeper: all of them get it."""
    units = 20
    await seed_stock(db, {"LAZY-HOT": units})
    old = await asyncio.gather(
        *(db.run(lambda s: hold_stock(s, [("LAZY-HOT", 1)], ttl_seconds=60)) for _ in range(units))
    )
    clock.advance(timedelta(seconds=61))
    url = db.url.render_as_string(hide_password=False)
    buyers_db = fast_deadlock_detection(Database(url, pool_size=10))
    outcomes: Counter[str] = Counter()
    errors: list[str] = []
    try:
        await asyncio.gather(*(_buy(buyers_db, "LAZY-HOT", outcomes, errors) for _ in range(units)))
    finally:
        await buyers_db.dispose()
    print(f"\n{db.dialect}: buyers {dict(outcomes)}, retried {Counter(retries.errors)}")
    assert errors == []
    assert outcomes == {"held": units}
    assert retries.errors == []
    table = await hold_table(db)
    assert Counter(table[view.id]["state"] for view in old) == {"expired": units}
    assert await stock_levels(db) == {"LAZY-HOT": (units, units)}
    assert await replayed(db) == await stock_levels(db)
