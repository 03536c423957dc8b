"""Promise 1, no oversell: 500 buyers in two processes race for the last 50 units of one SKU."""

from __future__ import annotations

from collections import Counter

import pytest

from kassa.db import Database
from tests.torture._support import (
    Worker,
    hold_table,
    movement_rows,
    replayed,
    seed_stock,
    start_together,
    stock_levels,
)

pytestmark = pytest.mark.torture

SKU = "HOT-1"
UNITS = 50
PROCESSES = 2
PER_PROCESS = 250


async def test_no_oversell_500_buyers_in_two_processes_for_50_units(
    db_url: str, db: Database
) -> None:
    await seed_stock(db, {SKU: UNITS})
    workers = [
        Worker(
            "tests.torture.holders",
            *("--url", db_url, "--sku", SKU),
            *("--count", str(PER_PROCESS), "--concurrency", str(PER_PROCESS)),
            *("--pool-size", "10"),
        )
        for _ in range(PROCESSES)
    ]
    try:
        await start_together(workers)
        reports = [await worker.result(within=90) for worker in workers]
    finally:
        for worker in workers:
            await worker.stop()

    held = [report["held"] for report in reports]
    refused = [report["refused"] for report in reports]
    print(
        f"\n{db.dialect}: held per process {held}, refused per process {refused}, "
        f"seconds {[r['seconds'] for r in reports]}"
    )
    errors = [error for report in reports for error in report["errors"]]
    assert errors == []
    # Single-line holds on one row cannot deadlock: nothing had to be run again either.
    assert [retried for report in reports for retried in report["retried"]] == []
    assert sum(held) == UNITS
    assert sum(refused) == PROCESSES * PER_PROCESS - UNITS

    held_ids = {hold["id"] for report in reports for hold in report["holds"]}
    assert len(held_ids) == UNITS
    table = await hold_table(db)
    assert set(table) == held_ids
    assert all(hold["state"] == "active" for hold in table.values())
    assert all(hold["lines"] == [(SKU, 1)] for hold in table.values())

    assert await stock_levels(db) == {SKU: (UNITS, UNITS)}
    rows = await movement_rows(db)
    assert Counter(row["kind"] for row in rows) == {"initial": 1, "hold": UNITS}
    assert {row["reference_id"] for row in rows if row["kind"] == "hold"} == held_ids
    assert await replayed(db) == {SKU: (UNITS, UNITS)}
