"""Helpers of the torture tests: seeding stock, reading the tables back, worker processes."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import defaultdict
from itertools import count
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from kassa.auth.principal import Principal
from kassa.catalog import service as catalog
from kassa.catalog.schemas import ProductCreate, VariantCreate
from kassa.db import Database
from kassa.inventory import ledger
from kassa.inventory.holds import hold_lines, holds
from kassa.inventory.ledger import movements
from kassa.inventory.service import stock

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = Principal(user_id="system", role="admin")
_products = count()


async def seed_stock(db: Database, levels: dict[str, int]) -> None:
    """One product with a variant per SKU, created through the catalog service."""
    n = next(_products)
    data = ProductCreate(
        name=f"Torture {n}",
        slug=f"torture-{n}",
        variants=[
            VariantCreate(sku=sku, name=sku, price_amount=1000, on_hand=on_hand)
            for sku, on_hand in levels.items()
        ],
    )
    await db.run(lambda s: catalog.create_product(s, data, creator=SYSTEM, default_currency="usd"))


async def stock_levels(db: Database) -> dict[str, tuple[int, int]]:
    """(on_hand, reserved) of every stock_levels row."""
    async with db.read() as session:
        result = await session.execute(select(stock.c.sku, stock.c.on_hand, stock.c.reserved))
        return {sku: (int(on_hand), int(reserved)) for sku, on_hand, reserved in result}


async def replayed(db: Database) -> dict[str, tuple[int, int]]:
    async with db.read() as session:
        return await ledger.replay(session)


async def hold_table(db: Database) -> dict[str, dict[str, Any]]:
    """Every hold: its state and its lines (sorted by SKU)."""
    async with db.read() as session:
        states = {
            hold_id: state
            for hold_id, state in await session.execute(select(holds.c.id, holds.c.state))
        }
        lines: dict[str, list[tuple[str, int]]] = defaultdict(list)
        result = await session.execute(
            select(hold_lines.c.hold_id, hold_lines.c.sku, hold_lines.c.quantity).order_by(
                hold_lines.c.hold_id, hold_lines.c.sku
            )
        )
        for hold_id, sku, quantity in result:
            lines[hold_id].append((sku, int(quantity)))
    return {hold_id: {"state": state, "lines": lines[hold_id]} for hold_id, state in states.items()}


def units_by_sku(table: dict[str, dict[str, Any]], state: str | None = None) -> dict[str, int]:
    """Units per SKU over the holds in `state` (all holds when None)."""
    total: dict[str, int] = defaultdict(int)
    for hold in table.values():
        if state is None or hold["state"] == state:
            for sku, quantity in hold["lines"]:
                total[sku] += quantity
    return dict(total)


async def movement_rows(db: Database) -> list[dict[str, Any]]:
    async with db.read() as session:
        result = await session.execute(select(movements).order_by(movements.c.id))
        return [dict(row._mapping) for row in result]


async def count_rows(db: Database, table: Any) -> int:
    async with db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


class Worker:
    """A `python -m MODULE ...` process that prints {"ready": true}, waits for a line on stdin,
    works, and prints its report as the last line of stdout."""

    def __init__(self, module: str, *args: str) -> None:
        self.module = module
        self.args = args
        self.process: asyncio.subprocess.Process | None = None
        self.output: list[str] = []

    async def start(self, within: float = 30) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self.module,
            *self.args,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await asyncio.wait_for(self._until_ready(), within)

    async def _until_ready(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while True:
            line = (await self.process.stdout.readline()).decode()
            if not line:
                raise AssertionError(f"{self.module} ended before it was ready: {self.output}")
            self.output.append(line)
            if line.strip() == '{"ready": true}':
                return

    def go(self) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(b"go\n")

    async def result(self, within: float = 60) -> dict[str, Any]:
        assert self.process is not None
        try:
            stdout, stderr = await asyncio.wait_for(self.process.communicate(), within)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise
        lines = [line for line in stdout.decode().splitlines() if line.strip()]
        assert self.process.returncode == 0, (
            f"{self.module} exited with {self.process.returncode}: {stderr.decode()[-3000:]}"
        )
        report: dict[str, Any] = json.loads(lines[-1])
        return report

    async def stop(self) -> None:
        """Kill the process if it still runs (after a failed test)."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def start_together(workers: list[Worker]) -> None:
    """Start every worker, wait until all are connected and ready, then release them at once."""
    await asyncio.gather(*(worker.start() for worker in workers))
    for worker in workers:
        worker.go()
    await asyncio.gather(
        *(w.process.stdin.drain() for w in workers if w.process and w.process.stdin)
    )
