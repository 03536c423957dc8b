"""Do other buyers wait while the payment provider is slow? Checkout latency on one hot SKU.

Run with `.venv/bin/python bench/slow_provider.py` (needs the local PostgreSQL; `--help` for the
options). It drops and recreates its own database (`kassa_bench_slow`), builds the app in this
process on it, and makes the sandbox provider's "create payment" call take `--delay` seconds
(as a provider across a slow network would). Then `--buyers` buyers, each with their own cart of
one unit of the same SKU, check out at once, twice: first with the provider answering at once
(the baseline), then with it slow. For each run it prints, per buyer, how long the checkout
request took and how long its hold step took (`hold_ms`, recorded on the checkout row): when the
provider is called inside the transaction that holds the hot stock row, every buyer's hold
waits for the provider calls of the buyers before it. Figures go to
bench/results/slow_provider.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url

from kassa import migrate
from kassa.app import create_app
from kassa.auth import service as auth_service
from kassa.auth.tokens import issue_token
from kassa.config import Settings
from kassa.db import Database
from kassa.payments.providers import sandbox

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/kassa_bench_slow"
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
NEVER_DROP = frozenset({"postgres", "test", "template0", "template1"})
SECRET = "bench-secret-key-that-is-long-enough-0123456789"
HOT_SKU = "SLOW-HOT"
ADDRESS = {
    "name": "Ada Lovelace",
    "line1": "1 Analytical Row",
    "city": "London",
    "postal_code": "N1 9GU",
    "country": "US",
}


async def recreate(url: str) -> None:
    parsed = make_url(url)
    name = parsed.database or ""
    if name in NEVER_DROP:
        raise SystemExit(f"refusing to drop {name!r}")
    admin = parsed.set(drivername="postgresql", database="postgres")
    conn = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    await asyncio.to_thread(migrate.upgrade, url)


def slow_down(delay: float) -> None:
    """Make the sandbox's create-payment call take `delay` seconds (a provider far away)."""
    original = getattr(sandbox.SandboxProvider, "_bench_original", None)
    if original is None:
        original = sandbox.SandboxProvider.create_payment
        sandbox.SandboxProvider._bench_original = original  # type: ignore[attr-defined]

    async def create_payment(self: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(delay)
        return await original(self, **kwargs)

    sandbox.SandboxProvider.create_payment = create_payment  # type: ignore[method-assign]


async def run_once(url: str, buyers: int, delay: float) -> dict[str, Any]:
    await recreate(url)
    settings = Settings(
        _env_file=None,
        database_url=url,
        secret_key=SECRET,
        sweep_interval_seconds=0,
        outbox_interval_seconds=0,
        database_pool_size=buyers + 5,
    )
    db = Database(url, pool_size=buyers + 5)
    user = await db.run(
        lambda s: auth_service.create_user(
            s, email="admin@example.com", password="correct-horse-battery", role="admin"
        )
    )
    token, _ = issue_token(
        secret=SECRET, user_id=user.id, role="admin", token_type="access", ttl_seconds=3600
    )
    admin = {"Authorization": f"Bearer {token}"}
    app = create_app(settings, db=db, background=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as c:
        response = await c.post(
            "/v1/products",
            json={
                "name": "Hot",
                "slug": "hot",
                "variants": [
                    {"sku": HOT_SKU, "name": "hot", "price_amount": 1000, "on_hand": 10_000}
                ],
            },
            headers=admin,
        )
        response.raise_for_status()
        for path, body in (
            ("/v1/admin/shipping-rates/us", {"amount": 500}),
            ("/v1/admin/tax-rates/us", {"basis_points": 1000}),
        ):
            (await c.put(path, json=body, headers=admin)).raise_for_status()
        carts = []
        for _ in range(buyers):
            cart = (await c.post("/v1/carts")).json()
            access = {"X-Cart-Token": cart["token"]}
            added = await c.post(
                f"/v1/carts/{cart['id']}/items",
                json={"sku": HOT_SKU, "quantity": 1},
                headers=access,
            )
            added.raise_for_status()
            carts.append((cart, access))
        slow_down(delay)
        start = asyncio.Event()

        async def buy(cart: dict[str, Any], access: dict[str, str]) -> tuple[float, str, int]:
            await start.wait()
            began = time.perf_counter()
            response = await c.post(
                "/v1/checkouts",
                json={"cart_id": cart["id"], "email": "a@example.com", "shipping_address": ADDRESS},
                headers=access,
            )
            took = time.perf_counter() - began
            body = response.json()
            return took * 1000, str(body.get("id")), response.status_code

        tasks = [asyncio.create_task(buy(cart, access)) for cart, access in carts]
        await asyncio.sleep(0.05)
        start.set()
        outcomes = await asyncio.gather(*tasks)
    async with db.read() as session:
        rows = (
            await session.execute(
                text("SELECT id, hold_ms FROM checkouts WHERE id = ANY(:ids)"),
                {"ids": [o[1] for o in outcomes]},
            )
        ).all()
    await db.dispose()
    hold_ms = sorted(float(r.hold_ms or 0) for r in rows)
    request_ms = sorted(o[0] for o in outcomes)
    return {
        "provider_delay_s": delay,
        "buyers": buyers,
        "statuses": sorted({o[2] for o in outcomes}),
        "checkouts_created": len(rows),
        "hold_ms": summary(hold_ms),
        "request_ms": summary(request_ms),
    }


def summary(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    return {
        "min": round(samples[0], 1),
        "median": round(statistics.median(samples), 1),
        "max": round(samples[-1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--buyers", type=int, default=10)
    parser.add_argument("--delay", type=float, default=2.0, help="provider delay, seconds")
    parser.add_argument("--output", default=str(RESULTS / "slow_provider.json"))
    args = parser.parse_args()
    runs = [
        asyncio.run(run_once(args.database_url, args.buyers, 0.0)),
        asyncio.run(run_once(args.database_url, args.buyers, args.delay)),
    ]
    print(f"{args.buyers} buyers check out one unit each of one hot SKU at once")
    print(f"{'provider delay':>15} {'status':>8} {'hold ms min/med/max':>26} {'request ms':>26}")
    for run in runs:
        hold, req = run["hold_ms"], run["request_ms"]
        print(
            f"{run['provider_delay_s']:>13.1f} s {','.join(map(str, run['statuses'])):>8} "
            f"{hold['min']:>8} {hold['median']:>8} {hold['max']:>8} "
            f"{req['min']:>8} {req['median']:>8} {req['max']:>8}"
        )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    print(f"written to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
