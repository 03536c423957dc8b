"""Promise 2, all-or-nothing holds: random multi-line holds from two processes on scarce stock,
and several to a transaction through `place_holds`.

Each successful hold is then released, committed or left alone, interleaved with the others. After
the run every hold must have exactly the lines its caller was given, and the stock levels, the
holds and the ledger must tell the same story. Plus property tests of the pure planning functions.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kassa import clock
from kassa.config import Settings
from kassa.db import Database
from kassa.inventory.holds import (
    InsufficientStock,
    hold_lines,
    hold_stock,
    normalize_lines,
)
from kassa.inventory.ledger import movements
from kassa.ops.sweeper import run_sweep
from tests.torture._engine import RetryCounter, describe, fast_deadlock_detection, warm_up
from tests.torture._support import (
    Worker,
    count_rows,
    hold_table,
    movement_rows,
    replayed,
    seed_stock,
    start_together,
    stock_levels,
    units_by_sku,
)
from tests.torture.holders import batched_holds, mixed_holds, random_lines

pytestmark = pytest.mark.torture

SKUS = [f"AON-{i:02d}" for i in range(20)]
HOLDS_PER_PROCESS = 150
BATCHES = 40  # place_holds calls of 1-5 requests each


async def test_all_or_nothing_random_multi_line_holds_from_two_processes(
    db_url: str, db: Database, retries: RetryCounter
) -> None:
    initial = await seed_scarce_stock(db)
    worker = Worker(
        "tests.torture.holders",
        *("--url", db_url, "--skus", ",".join(SKUS), "--seed", "2"),
        *("--count", str(HOLDS_PER_PROCESS), "--concurrency", str(HOLDS_PER_PROCESS)),
        *("--pool-size", "10"),
    )
    try:
        await start_together([worker])
        local = await mixed_holds(db, SKUS, HOLDS_PER_PROCESS, HOLDS_PER_PROCESS, seed=1)
        remote = await worker.result(within=90)
    finally:
        await worker.stop()

    reports = [local.report(), remote]
    assert [error for report in reports for error in report["errors"]] == []
    # Rows are locked in one global order: no deadlock, not even one that a retry hid.
    assert retries.errors == []
    assert remote["retried"] == []
    assert local.held + local.refused == remote["held"] + remote["refused"] == HOLDS_PER_PROCESS
    await check_all_or_nothing(db, initial, reports)


async def test_all_or_nothing_several_requests_per_transaction_with_place_holds(
    db_url: str, db: Database, retries: RetryCounter
) -> None:
    """`place_holds` serves several requests in one transaction, each all-or-nothing on its own
    (a savepoint each), racing with single `hold_stock` calls."""
    initial = await seed_scarce_stock(db)
    batches_db = fast_deadlock_detection(Database(db_url, pool_size=10))
    try:
        batched, single = await asyncio.gather(
            batched_holds(batches_db, SKUS, BATCHES, seed=3),
            mixed_holds(batches_db, SKUS, 60, 60, seed=4),
        )
    finally:
        await batches_db.dispose()
    reports = [batched.report(), single.report()]
    assert [error for report in reports for error in report["errors"]] == []
    assert batched.held + batched.refused >= BATCHES
    assert single.held + single.refused == 60
    await check_all_or_nothing(db, initial, reports)
    # A batch locks the rows of all its requests in SKU order before it takes any: no deadlock,
    # so nothing had to be run again.
    assert retries.errors == []


async def seed_scarce_stock(db: Database) -> dict[str, int]:
    rng = random.Random(20240601)
    initial = {sku: rng.randint(0, 15) for sku in SKUS}
    await seed_stock(db, initial)
    return initial


async def check_all_or_nothing(
    db: Database, initial: dict[str, int], reports: list[dict[str, Any]]
) -> None:
    """Every hold has all its lines or none, and levels, holds and ledger tell the same story."""
    done = [hold for report in reports for hold in report["holds"]]
    actions = Counter(hold["action"] for hold in done)
    print(
        f"\n{db.dialect}: held {[r['held'] for r in reports]}, "
        f"refused {[r['refused'] for r in reports]}, actions {dict(actions)}, "
        f"initial units {sum(initial.values())}"
    )
    assert len(done) >= 20, "too few holds succeeded to test anything"

    # Every successful call got exactly its own lines, summed per SKU and sorted.
    for hold in done:
        returned = [tuple(line) for line in hold["lines"]]
        assert returned == normalize_lines(tuple(line) for line in hold["asked"])
        expected_state = {"release": "released", "commit": "committed", "keep": "active"}
        assert hold["state"] == expected_state[hold["action"]]

    # The database holds exactly the successful holds, each with all its lines and no others.
    table = await hold_table(db)
    assert set(table) == {hold["id"] for hold in done}
    for hold in done:
        row = table[hold["id"]]
        assert row["lines"] == [tuple(line) for line in hold["lines"]]
        assert row["state"] == hold["state"]
    assert await count_rows(db, hold_lines) == sum(len(hold["lines"]) for hold in done)

    held: dict[str, int] = defaultdict(int)
    by_action: dict[str, dict[str, int]] = {a: defaultdict(int) for a in ("release", "commit")}
    by_action["keep"] = defaultdict(int)
    for hold in done:
        for sku, quantity in hold["lines"]:
            held[sku] += quantity
            by_action[hold["action"]][sku] += quantity
    released, committed, active = by_action["release"], by_action["commit"], by_action["keep"]

    levels = await stock_levels(db)
    assert set(levels) == set(SKUS)
    for sku in SKUS:
        on_hand, reserved = levels[sku]
        assert 0 <= reserved <= on_hand, sku
        assert reserved == active[sku], sku
        assert on_hand == initial[sku] - committed[sku], sku
        # Units held and not given back never exceeded what there was.
        assert held[sku] - released[sku] <= initial[sku], sku
        assert held[sku] - released[sku] == reserved + committed[sku], sku

    # The ledger: one movement per line per event, and it replays to the levels.
    rows = await movement_rows(db)
    kinds = Counter(row["kind"] for row in rows)
    lines_of = {a: sum(len(h["lines"]) for h in done if h["action"] == a) for a in actions}
    assert kinds["hold"] == sum(len(hold["lines"]) for hold in done)
    assert kinds["release"] == lines_of.get("release", 0)
    assert kinds["commit"] == lines_of.get("commit", 0)
    assert kinds["initial"] == len(SKUS)
    assert await count_rows(db, movements) == sum(kinds.values())
    assert await replayed(db) == levels


async def test_all_or_nothing_no_deadlock_when_buyers_reclaim_expired_holds(
    db_url: str, db: Database, retries: RetryCounter
) -> None:
    """Buyers who find the stock in expired holds take it back (lazy reclaim) while sweepers
    end the same holds: with one lock order everywhere (hold rows, then stock rows in SKU order),
    nobody waits for anybody in a circle, so nothing has to be run again."""
    skus = [f"DL-{i}" for i in range(4)]
    await seed_stock(db, dict.fromkeys(skus, 22))
    # 40 holds of two lines each hold 20 units of every SKU; 2 units of each stay free, so the
    # first buyers succeed at once and the next ones queue on their stock rows.
    for k in range(40):
        lines = [(skus[k % 4], 1), (skus[(k + 1) % 4], 1)]
        await db.run(lambda s, lines=lines: hold_stock(s, lines, ttl_seconds=60))
    clock.advance(timedelta(seconds=61))

    buyers = fast_deadlock_detection(Database(db_url, pool_size=10))
    sweepers = [fast_deadlock_detection(Database(db_url, pool_size=2)) for _ in range(4)]
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=db_url,
        sweep_batch_size=3,
    )
    errors: list[str] = []
    held = 0

    async def buy(lines: list[tuple[str, int]]) -> None:
        nonlocal held
        try:
            await buyers.run(lambda s: hold_stock(s, lines, ttl_seconds=900))
            held += 1
        except InsufficientStock:
            pass
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}")

    rng = random.Random(7)
    wishes = [[(sku, 1)] for _ in range(19) for sku in skus]
    wishes += [random_lines(rng, skus) for _ in range(10)]
    try:
        await asyncio.gather(*(warm_up(d, 2) for d in sweepers), warm_up(buyers, 10))
        sweeps = await asyncio.gather(
            *(run_sweep(sweeper, settings) for sweeper in sweepers),
            *(buy(lines) for lines in wishes),
            return_exceptions=True,
        )
    finally:
        for extra in (buyers, *sweepers):
            await extra.dispose()
    failed_sweeps = [describe(e) for e in sweeps if isinstance(e, BaseException)]
    print(
        f"\n{db.dialect}: {held} of {len(wishes)} buyers held, retried {Counter(retries.errors)}, "
        f"failed sweeps {failed_sweeps}"
    )
    assert errors == []
    assert failed_sweeps == []
    assert retries.errors == []

    table = await hold_table(db)
    assert Counter(hold["state"] for hold in table.values()) == {"expired": 40, "active": held}
    levels = await stock_levels(db)
    active = units_by_sku(table, "active")
    assert levels == {sku: (22, active.get(sku, 0)) for sku in skus}
    assert await replayed(db) == levels


# --- the pure functions ---------------------------------------------------------------------

sku_strategy = st.sampled_from(["A", "B", "C", "D", "a", "b", "A-1", "Z9", "É"])
lines_strategy = st.lists(
    st.tuples(sku_strategy, st.integers(min_value=1, max_value=1_000_000)), max_size=30
)


@given(lines_strategy)
def test_all_or_nothing_normalize_lines_sorts_merges_and_keeps_totals(
    lines: list[tuple[str, int]],
) -> None:
    result = normalize_lines(lines)
    skus = [sku for sku, _ in result]
    assert skus == sorted(skus)
    assert len(skus) == len(set(skus))
    assert all(quantity > 0 for _, quantity in result)
    totals: dict[str, int] = defaultdict(int)
    for sku, quantity in lines:
        totals[sku] += quantity
    assert dict(result) == totals
    assert sum(q for _, q in result) == sum(q for _, q in lines)
    assert normalize_lines(result) == result


@given(lines_strategy, st.integers(min_value=-5, max_value=0), st.data())
def test_all_or_nothing_normalize_lines_refuses_non_positive_quantities(
    lines: list[tuple[str, int]], bad: int, data: st.DataObject
) -> None:
    position = data.draw(st.integers(min_value=0, max_value=len(lines)))
    with pytest.raises(ValueError):
        normalize_lines([*lines[:position], ("BAD", bad), *lines[position:]])
