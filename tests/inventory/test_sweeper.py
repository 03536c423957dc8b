"""The sweeper: expires due holds, gives units back, remembers its run."""

from __future__ import annotations

import json
from datetime import timedelta

from kassa import clock
from kassa.inventory import holds
from kassa.ops import jobs
from kassa.ops.sweeper import run_sweep


async def test_sweep_expires_only_due_holds(db, settings, make_product) -> None:
    await make_product(("A", 10), ("B", 10))
    short = await db.run(lambda s: holds.hold_stock(s, [("A", 2), ("B", 1)], ttl_seconds=10))
    long = await db.run(lambda s: holds.hold_stock(s, [("A", 3)], ttl_seconds=100))

    clock.advance(timedelta(seconds=11))
    result = await run_sweep(db, settings)
    assert (result.expired_holds, result.released_units) == (1, 3)
    again = await run_sweep(db, settings)
    assert (again.expired_holds, again.released_units) == (0, 0)

    async with db.read() as session:
        assert (await holds.get_hold(session, short.id)).state == "expired"
        assert (await holds.get_hold(session, long.id)).state == "active"
        run = await jobs.last_run(session, "sweeper")
    assert run is not None and run.runs == 2 and run.last_status == "ok"
    assert json.loads(run.last_result or "{}")["expired_holds"] == 0


async def test_sweep_works_in_batches(db, settings, make_product, monkeypatch) -> None:
    from kassa.ops import sweeper

    await make_product(("A", 100))
    for _ in range(7):
        await db.run(lambda s: holds.hold_stock(s, [("A", 1)], ttl_seconds=5))
    clock.advance(timedelta(seconds=6))
    batches: list[int] = []
    expire = sweeper.expire_due_holds

    async def counting(session, *, now, limit):
        expired = await expire(session, now=now, limit=limit)
        batches.append(expired[0])
        return expired

    monkeypatch.setattr(sweeper, "expire_due_holds", counting)
    small = settings.model_copy(update={"sweep_batch_size": 3})
    result = await run_sweep(db, small)
    assert (result.expired_holds, result.released_units) == (7, 7)
    assert batches == [3, 3, 1]


async def test_admin_sweep_endpoint(client, admin, db, make_product) -> None:
    await make_product(("A", 10))
    await db.run(lambda s: holds.hold_stock(s, [("A", 4)], ttl_seconds=5))
    clock.advance(timedelta(seconds=6))
    response = await client.post("/v1/admin/jobs/sweep", headers=admin.headers)
    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("expired_holds", "expired_checkouts", "released_units")} == {
        "expired_holds": 1,
        "expired_checkouts": 0,
        "released_units": 4,
    }
    assert body["duration_ms"] >= 0
    assert (await client.get("/v1/inventory/A")).json()["reserved"] == 0
