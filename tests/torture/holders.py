"""A holder process for the torture tests: many concurrent holds through its own engine.

    python -m tests.torture.holders --url URL --sku SKU --count 250 --concurrency 250

fires `count` one-unit holds on SKU (at most `concurrency` at a time) with asyncio.gather and
prints one JSON line: {"held": n, "refused": m, "errors": [...], "holds": [...], "retried": [...]}
("retried": the transient errors, such as deadlocks, that `Database.run` silently ran again).

With `--skus A,B,C --seed N` instead of `--sku`, each hold is a random multi-line hold (1-5 lines,
quantities 1-4, the same SKU possibly twice) and a successful hold is then randomly released,
committed or left alone; "holds" lists what each successful hold returned and what became of it.

Start barrier: the process connects its pool, prints {"ready": true}, then waits until the
`--start-at` UNIX time, or (without it) until a line arrives on stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from typing import Any

from kassa.db import Database
from kassa.inventory.holds import (
    HoldRequest,
    HoldView,
    InsufficientStock,
    Refusal,
    commit_hold,
    hold_stock,
    normalize_lines,
    place_holds,
    release_hold,
)
from tests.torture._engine import RetryCounter, fast_deadlock_detection, wait_for_start, warm_up

TTL_SECONDS = 900


def random_lines(rng: random.Random, skus: list[str]) -> list[tuple[str, int]]:
    """1-5 lines, quantities 1-4; the same SKU may come up twice (hold_stock sums them)."""
    return [(rng.choice(skus), rng.randint(1, 4)) for _ in range(rng.randint(1, 5))]


def random_action(rng: random.Random) -> str:
    return rng.choice(("release", "commit", "keep"))


class Tally:
    """Outcomes of one batch of hold calls, as the callers saw them."""

    def __init__(self) -> None:
        self.held = 0
        self.refused = 0
        self.errors: list[str] = []
        self.holds: list[dict[str, Any]] = []

    def error(self, error: BaseException) -> None:
        self.errors.append(f"{type(error).__name__}: {error}")

    def report(self) -> dict[str, Any]:
        return {
            "held": self.held,
            "refused": self.refused,
            "errors": self.errors,
            "holds": self.holds,
        }


async def one_unit_holds(db: Database, sku: str, count: int, concurrency: int) -> Tally:
    tally = Tally()
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            try:
                view = await db.run(lambda s: hold_stock(s, [(sku, 1)], ttl_seconds=TTL_SECONDS))
            except InsufficientStock:
                tally.refused += 1
            except Exception as error:
                tally.error(error)
            else:
                tally.held += 1
                tally.holds.append({"id": view.id, "lines": view.lines, "action": "keep"})

    await asyncio.gather(*(one() for _ in range(count)))
    return tally


async def mixed_holds(
    db: Database, skus: list[str], count: int, concurrency: int, seed: int
) -> Tally:
    """Random multi-line holds, each then released, committed or kept (all decided up front)."""
    tally = Tally()
    gate = asyncio.Semaphore(concurrency)
    rng = random.Random(seed)
    plans = [(random_lines(rng, skus), random_action(rng)) for _ in range(count)]

    async def one(lines: list[tuple[str, int]], action: str) -> None:
        async with gate:
            try:
                view = await db.run(lambda s: hold_stock(s, lines, ttl_seconds=TTL_SECONDS))
            except InsufficientStock:
                tally.refused += 1
                return
            except Exception as error:
                tally.error(error)
                return
            tally.held += 1
            record = {"id": view.id, "asked": lines, "lines": view.lines, "action": action}
            tally.holds.append(record)
            try:
                if action == "release":
                    record["state"] = (await db.run(lambda s: release_hold(s, view.id))).state
                elif action == "commit":
                    record["state"] = (await db.run(lambda s: commit_hold(s, view.id))).state
                else:
                    record["state"] = "active"
            except Exception as error:
                tally.error(error)

    await asyncio.gather(*(one(lines, action) for lines, action in plans))
    return tally


async def batched_holds(db: Database, skus: list[str], batches: int, seed: int) -> Tally:
    """Like `mixed_holds`, but 1-5 requests at a time through `place_holds`, in one transaction
    each: a refused request rolls back only its own savepoint, the others in the batch stay."""
    tally = Tally()
    rng = random.Random(seed)
    plans = [
        [(random_lines(rng, skus), random_action(rng)) for _ in range(rng.randint(1, 5))]
        for _ in range(batches)
    ]

    async def settle(view: HoldView, asked: list[tuple[str, int]], action: str) -> None:
        record = {"id": view.id, "asked": asked, "lines": view.lines, "action": action}
        tally.holds.append(record)
        if action == "release":
            record["state"] = (await db.run(lambda s: release_hold(s, view.id))).state
        elif action == "commit":
            record["state"] = (await db.run(lambda s: commit_hold(s, view.id))).state
        else:
            record["state"] = "active"

    async def one(plan: list[tuple[list[tuple[str, int]], str]]) -> None:
        requests = [HoldRequest(normalize_lines(lines), TTL_SECONDS) for lines, _ in plan]
        try:
            results = await db.run(lambda s: place_holds(s, requests))
            for (asked, action), result in zip(plan, results, strict=True):
                if isinstance(result, Refusal):
                    tally.refused += 1
                    if result.unknown_skus or not result.shortages:
                        tally.errors.append(f"odd refusal {result}")
                else:
                    tally.held += 1
                    await settle(result, asked, action)
        except Exception as error:
            tally.error(error)

    await asyncio.gather(*(one(plan) for plan in plans))
    return tally


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--sku", help="one-unit holds on this SKU")
    target.add_argument("--skus", help="comma-separated SKUs for random multi-line holds")
    parser.add_argument("--count", type=int, default=250)
    parser.add_argument("--concurrency", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool-size", type=int, default=10)
    parser.add_argument("--start-at", type=float, default=None, help="UNIX time to start at")
    args = parser.parse_args(argv)

    retries = RetryCounter()
    retries.install()
    db = fast_deadlock_detection(Database(args.url, pool_size=args.pool_size))
    try:
        await warm_up(db, args.pool_size)
        print(json.dumps({"ready": True}), flush=True)
        await wait_for_start(args.start_at)
        started = time.perf_counter()
        if args.sku:
            tally = await one_unit_holds(db, args.sku, args.count, args.concurrency)
        else:
            skus = args.skus.split(",")
            tally = await mixed_holds(db, skus, args.count, args.concurrency, args.seed)
        report = tally.report()
        report["seconds"] = round(time.perf_counter() - started, 3)
        report["retried"] = retries.errors
        return report
    finally:
        await db.dispose()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())), flush=True)
