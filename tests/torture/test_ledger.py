"""Promise 4, every stock change is in the ledger, and the ledger cannot be rewritten.

A seeded random mix of product creation, holds, releases, commits, adjustments, clock moves,
sweeps and lazy reclaims runs against a small model of what each step must do. The database must
agree with the model step by step, and replaying the ledger must give today's levels.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from kassa import clock
from kassa.config import Settings
from kassa.db import Database
from kassa.errors import InvalidTransition
from kassa.inventory.holds import (
    InsufficientStock,
    UnknownSku,
    commit_hold,
    hold_stock,
    normalize_lines,
    release_hold,
)
from kassa.inventory.service import StockBelowReserved, adjust_stock
from kassa.ops.sweeper import run_sweep
from tests.torture._support import (
    hold_table,
    movement_rows,
    replayed,
    seed_stock,
    stock_levels,
)

pytestmark = pytest.mark.torture

STEPS = 240
# The clock moves in steps of 150 s and no TTL is a multiple of 150 s, so a hold is always at
# least 50 s away from its expiry when anything looks at it: the real seconds the run takes
# never decide an outcome.
CLOCK_STEP = 150
TTLS = (100, 200, 400, 500, 700)


@dataclass
class ModelHold:
    lines: list[tuple[str, int]]
    expires_at: int  # seconds on the moved clock
    state: str = "active"


@dataclass
class Model:
    """What the stock and holds must be after each step, worked out without the database."""

    levels: dict[str, list[int]] = field(default_factory=dict)  # sku -> [on_hand, reserved]
    holds: dict[str, ModelHold] = field(default_factory=dict)
    now: int = 0
    kinds: Counter[str] = field(default_factory=Counter)

    def free(self, sku: str) -> int:
        on_hand, reserved = self.levels[sku]
        return on_hand - reserved

    def due(self, hold: ModelHold) -> bool:
        return hold.state == "active" and hold.expires_at <= self.now

    def end(self, hold: ModelHold, state: str) -> None:
        for sku, quantity in hold.lines:
            self.levels[sku][1] -= quantity
            if state == "committed":
                self.levels[sku][0] -= quantity
        hold.state = state
        self.kinds[{"expired": "expire", "released": "release", "committed": "commit"}[state]] += (
            len(hold.lines)
        )

    def hold_outcome(self, lines: list[tuple[str, int]]) -> tuple[str, list[ModelHold]]:
        """'held', 'refused' or 'unknown', and the expired holds a success reclaimed on the way.

        Every hold first reclaims the overdue holds on its SKUs; a refusal rolls that reclaim back
        with everything else."""
        if any(sku not in self.levels for sku, _ in lines):
            return "unknown", []
        skus = {sku for sku, _ in lines}
        due = [h for h in self.holds.values() if self.due(h) and skus & {s for s, _ in h.lines}]
        freed: Counter[str] = Counter()
        for hold in due:
            for sku, quantity in hold.lines:
                freed[sku] += quantity
        if all(self.free(sku) + freed[sku] >= quantity for sku, quantity in lines):
            return "held", due
        return "refused", []


async def test_ledger_replays_to_the_levels_after_a_random_mix(
    db: Database, settings: Settings
) -> None:
    rng = random.Random(4)
    model = Model()
    outcomes: Counter[str] = Counter()
    products = 0

    async def new_product() -> None:
        nonlocal products
        products += 1
        levels = {f"L{products}-{v}": rng.randint(0, 20) for v in range(rng.randint(1, 3))}
        await seed_stock(db, levels)
        for sku, on_hand in levels.items():
            model.levels[sku] = [on_hand, 0]
        model.kinds["initial"] += len(levels)
        outcomes["product"] += 1

    async def hold() -> None:
        skus = sorted(model.levels)
        asked = [(rng.choice(skus), rng.randint(1, 4)) for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.05:
            asked.append(("NO-SUCH-SKU", 1))
        lines = normalize_lines(asked)
        ttl = rng.choice(TTLS)
        expected, reclaimed = model.hold_outcome(lines)
        try:
            view = await db.run(lambda s: hold_stock(s, asked, ttl_seconds=ttl))
        except InsufficientStock:
            assert expected == "refused", (lines, model.levels)
            outcomes["hold refused"] += 1
            return
        except UnknownSku:
            assert expected == "unknown", lines
            outcomes["hold unknown SKU"] += 1
            return
        assert expected == "held", (lines, model.levels)
        assert view.lines == lines
        for due in reclaimed:
            model.end(due, "expired")
        for sku, quantity in lines:
            model.levels[sku][1] += quantity
        model.holds[view.id] = ModelHold(lines, model.now + ttl)
        model.kinds["hold"] += len(lines)
        outcomes["hold" + (" after lazy reclaim" if reclaimed else "")] += 1

    async def release_or_commit(target: str) -> None:
        if not model.holds:
            return
        hold_id = rng.choice(sorted(model.holds))
        hold = model.holds[hold_id]
        state = "expired" if model.due(hold) else hold.state
        move = release_hold if target == "released" else commit_hold
        verb = "release" if target == "released" else "commit"
        if (state == "committed" and target == "released") or (
            state in ("released", "expired") and target == "committed"
        ):
            # Refused, and the expiry that `_move` did first is rolled back with it.
            with pytest.raises(InvalidTransition):
                await db.run(lambda s: move(s, hold_id))
            outcomes[f"{verb} refused"] += 1
            return
        view = await db.run(lambda s: move(s, hold_id))
        if model.due(hold):
            model.end(hold, "expired")
        if hold.state == "active":
            model.end(hold, target)
        assert view.state == hold.state
        outcomes[f"{verb} -> {hold.state}"] += 1

    async def adjust() -> None:
        sku = rng.choice(sorted(model.levels))
        reason = rng.choice(("restock", "correction", "damage"))
        delta = {
            "restock": rng.randint(1, 10),
            "correction": rng.choice((-5, -3, -1, 1, 2, 4)),
            "damage": -rng.randint(1, 3),
        }[reason]
        on_hand, reserved = model.levels[sku]
        if on_hand + delta < reserved:
            with pytest.raises(StockBelowReserved):
                await db.run(
                    lambda s: adjust_stock(s, sku=sku, delta=delta, reason=reason, actor_id="t")
                )
            outcomes["adjust refused"] += 1
            return
        view = await db.run(
            lambda s: adjust_stock(s, sku=sku, delta=delta, reason=reason, actor_id="t")
        )
        model.levels[sku][0] += delta
        assert (view.on_hand, view.reserved) == tuple(model.levels[sku])
        model.kinds["restock" if reason == "restock" else "adjustment"] += 1
        outcomes[f"adjust {reason}"] += 1

    async def sweep() -> None:
        due = [h for h in model.holds.values() if model.due(h)]
        result = await run_sweep(db, settings)
        assert result.expired_holds == len(due)
        assert result.released_units == sum(q for h in due for _, q in h.lines)
        for hold in due:
            model.end(hold, "expired")
        outcomes["sweep"] += 1

    async def check() -> None:
        levels = await stock_levels(db)
        assert levels == {sku: tuple(level) for sku, level in model.levels.items()}
        assert await replayed(db) == levels
        table = await hold_table(db)
        assert {i: h["state"] for i, h in table.items()} == {
            i: h.state for i, h in model.holds.items()
        }

    await new_product()
    await new_product()
    for step in range(STEPS):
        roll = rng.random()
        if roll < 0.04:
            await new_product()
        elif roll < 0.45:
            await hold()
        elif roll < 0.57:
            await release_or_commit("released")
        elif roll < 0.69:
            await release_or_commit("committed")
        elif roll < 0.84:
            await adjust()
        elif roll < 0.94:
            clock.advance(timedelta(seconds=CLOCK_STEP))
            model.now += CLOCK_STEP
            outcomes["clock +150 s"] += 1
        else:
            await sweep()
        if step % 40 == 39:
            await check()
    await check()

    rows = await movement_rows(db)
    assert Counter(row["kind"] for row in rows) == model.kinds
    assert all(row["reference_id"] for row in rows)
    states = Counter(h.state for h in model.holds.values())
    print(f"\n{db.dialect}: {dict(outcomes)}; holds {dict(states)}; {len(rows)} movements")
    # The mix must have exercised every path it claims to.
    for kind in ("initial", "hold", "release", "expire", "commit", "restock", "adjustment"):
        assert model.kinds[kind] > 0, kind
    assert outcomes["hold after lazy reclaim"] > 0
    assert outcomes["hold refused"] > 0


async def test_ledger_is_append_only_in_the_database(db: Database) -> None:
    await seed_stock(db, {"APPEND-1": 5})
    await db.run(lambda s: hold_stock(s, [("APPEND-1", 2)], ttl_seconds=60))
    before = await movement_rows(db)
    assert [row["kind"] for row in before] == ["initial", "hold"]

    statements = [
        "UPDATE stock_movements SET on_hand_delta = 1000",
        "UPDATE stock_movements SET reason = 'rewritten' WHERE kind = 'hold'",
        "DELETE FROM stock_movements",
        "DELETE FROM stock_movements WHERE kind = 'hold'",
    ]
    for statement in statements:
        with pytest.raises(DBAPIError, match="append-only"):
            await db.run(lambda s, statement=statement: s.execute(text(statement)))
    assert await movement_rows(db) == before
    assert await replayed(db) == await stock_levels(db) == {"APPEND-1": (5, 2)}
