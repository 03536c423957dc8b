"""The hold endpoints and service: all-or-nothing, transitions, TTL, lazy reclaim."""

from __future__ import annotations

from datetime import timedelta

import httpx

from kassa import clock
from tests.conftest import Account


async def hold(client: httpx.AsyncClient, admin: Account, *lines: tuple[str, int], **extra):
    body = {"lines": [{"sku": s, "quantity": q} for s, q in lines], **extra}
    return await client.post("/v1/holds", json=body, headers=admin.headers)


async def level(client: httpx.AsyncClient, sku: str) -> dict:
    response = await client.get(f"/v1/inventory/{sku}")
    assert response.status_code == 200
    return response.json()


async def test_hold_reserves_every_line(client, admin, make_product) -> None:
    await make_product(("A", 5), ("B", 3))
    response = await hold(client, admin, ("B", 2), ("A", 1), ("A", 2), reference="pos-1")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["state"] == "active"
    assert body["id"].startswith("hold_")
    assert body["reference"] == "pos-1"
    assert body["lines"] == [{"sku": "A", "quantity": 3}, {"sku": "B", "quantity": 2}]
    assert await level(client, "A") == {"sku": "A", "on_hand": 5, "reserved": 3, "available": 2}
    assert (await level(client, "B"))["available"] == 1


async def test_all_or_nothing_when_one_line_is_short(client, admin, make_product) -> None:
    await make_product(("A", 5), ("B", 1))
    response = await hold(client, admin, ("A", 2), ("B", 2))
    assert response.status_code == 409
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["code"] == "insufficient_stock"
    assert problem["errors"] == [{"sku": "B", "requested": 2, "available": 1}]
    assert (await level(client, "A"))["reserved"] == 0
    assert (await level(client, "B"))["reserved"] == 0


async def test_unknown_sku_is_404(client, admin, make_product) -> None:
    await make_product(("A", 5))
    response = await hold(client, admin, ("A", 1), ("NOPE", 1))
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert response.json()["skus"] == ["NOPE"]
    assert (await level(client, "A"))["reserved"] == 0


async def test_release_and_commit_are_idempotent(client, admin, make_product) -> None:
    await make_product(("A", 5))
    first = (await hold(client, admin, ("A", 2))).json()
    second = (await hold(client, admin, ("A", 1))).json()

    for _ in range(2):
        response = await client.post(f"/v1/holds/{first['id']}/release", headers=admin.headers)
        assert response.status_code == 200
        assert response.json()["state"] == "released"
    assert await level(client, "A") == {"sku": "A", "on_hand": 5, "reserved": 1, "available": 4}

    for _ in range(2):
        response = await client.post(f"/v1/holds/{second['id']}/commit", headers=admin.headers)
        assert response.status_code == 200
        assert response.json()["state"] == "committed"
    assert await level(client, "A") == {"sku": "A", "on_hand": 4, "reserved": 0, "available": 4}


async def test_crossing_transitions_are_409(client, admin, make_product) -> None:
    await make_product(("A", 5))
    released = (await hold(client, admin, ("A", 1))).json()["id"]
    committed = (await hold(client, admin, ("A", 1))).json()["id"]
    await client.post(f"/v1/holds/{released}/release", headers=admin.headers)
    await client.post(f"/v1/holds/{committed}/commit", headers=admin.headers)

    response = await client.post(f"/v1/holds/{released}/commit", headers=admin.headers)
    assert response.status_code == 409
    problem = response.json()
    assert (problem["code"], problem["from"], problem["to"]) == (
        "invalid_transition",
        "released",
        "committed",
    )
    response = await client.post(f"/v1/holds/{committed}/release", headers=admin.headers)
    assert response.status_code == 409
    assert response.json()["from"] == "committed"
    assert await level(client, "A") == {"sku": "A", "on_hand": 4, "reserved": 0, "available": 4}


async def test_expired_hold_cannot_be_committed_and_release_is_a_no_op(
    client, admin, make_product
) -> None:
    await make_product(("A", 5))
    hold_id = (await hold(client, admin, ("A", 2), ttl_seconds=60)).json()["id"]
    clock.advance(timedelta(seconds=61))
    shown = await client.get(f"/v1/holds/{hold_id}", headers=admin.headers)
    assert shown.json()["state"] == "expired"

    response = await client.post(f"/v1/holds/{hold_id}/commit", headers=admin.headers)
    assert response.status_code == 409
    assert response.json()["from"] == "expired"
    assert (await level(client, "A"))["on_hand"] == 5

    response = await client.post(f"/v1/holds/{hold_id}/release", headers=admin.headers)
    assert response.status_code == 200
    assert response.json()["state"] == "expired"
    assert await level(client, "A") == {"sku": "A", "on_hand": 5, "reserved": 0, "available": 5}


async def test_ttl_defaults_and_is_capped(client, admin, make_product, settings) -> None:
    await make_product(("A", 5))
    before = clock.now()
    default = (await hold(client, admin, ("A", 1))).json()
    capped = (await hold(client, admin, ("A", 1), ttl_seconds=86_400)).json()
    from datetime import datetime

    def seconds(body: dict) -> float:
        expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
        return (expires - before).total_seconds()

    assert settings.hold_ttl_seconds - 1 <= seconds(default) <= settings.hold_ttl_seconds + 5
    assert settings.hold_max_ttl_seconds - 1 <= seconds(capped) <= settings.hold_max_ttl_seconds + 5


async def test_lazy_reclaim_takes_back_an_expired_hold(client, admin, make_product) -> None:
    await make_product(("LAST", 1))
    old = (await hold(client, admin, ("LAST", 1), ttl_seconds=30)).json()["id"]
    assert (await hold(client, admin, ("LAST", 1))).status_code == 409
    clock.advance(timedelta(seconds=31))
    # No sweeper has run: the new hold finds too little stock and reclaims the expired one.
    response = await hold(client, admin, ("LAST", 1))
    assert response.status_code == 201
    assert (await client.get(f"/v1/holds/{old}", headers=admin.headers)).json()[
        "state"
    ] == "expired"
    assert await level(client, "LAST") == {
        "sku": "LAST",
        "on_hand": 1,
        "reserved": 1,
        "available": 0,
    }


async def test_holds_need_an_admin(client, make_user, make_product) -> None:
    await make_product(("A", 5))
    body = {"lines": [{"sku": "A", "quantity": 1}]}
    assert (await client.post("/v1/holds", json=body)).status_code == 401
    for role in ("customer", "vendor"):
        account = await make_user(role)
        response = await client.post("/v1/holds", json=body, headers=account.headers)
        assert response.status_code == 403
        assert response.json()["code"] == "forbidden"
    assert (await client.get("/v1/holds/hold_x")).status_code == 401


async def test_unknown_hold_is_404(client, admin) -> None:
    for path in ("", "/release", "/commit"):
        method = client.get if not path else client.post
        response = await method(f"/v1/holds/hold_missing{path}", headers=admin.headers)
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


async def test_bad_hold_input_is_422(client, admin, make_product) -> None:
    await make_product(("A", 5))
    bad_bodies = [
        {"lines": []},
        {"lines": [{"sku": "A", "quantity": 0}]},
        {"lines": [{"sku": "A", "quantity": -1}]},
        {"lines": [{"sku": "A", "quantity": 1.5}]},
        {"lines": [{"sku": "A", "quantity": "1"}]},
        {"lines": [{"sku": "A", "quantity": 10**30}]},
        {"lines": [{"sku": "A", "quantity": 2_000_000}]},
        {"lines": [{"sku": "", "quantity": 1}]},
        {"lines": [{"sku": "A", "quantity": 1}], "ttl_seconds": 0},
        {"lines": [{"sku": "A", "quantity": 1}], "surprise": True},
        {"lines": [{"sku": "A", "quantity": 1}] * 101},
        [],
    ]
    for body in bad_bodies:
        response = await client.post("/v1/holds", json=body, headers=admin.headers)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["code"] == "validation_error"
        assert response.json()["errors"]
    assert (await level(client, "A"))["reserved"] == 0
