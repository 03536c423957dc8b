"""Catalog endpoints: create, read with availability, change, ownership and visibility."""

from __future__ import annotations

import pytest

PRODUCT = {
    "name": "Lamp",
    "slug": "lamp",
    "description": "Brass",
    "variants": [
        {"sku": "LAMP-S", "name": "Small", "price_amount": 1999, "on_hand": 3},
        {"sku": "LAMP-L", "name": "Large", "price_amount": 2999, "currency": "eur"},
    ],
}


async def test_create_and_read_product(client, admin) -> None:
    response = await client.post("/v1/products", json=PRODUCT, headers=admin.headers)
    assert response.status_code == 201, response.text
    product = response.json()
    assert product["id"].startswith("prod_")
    small, large = sorted(product["variants"], key=lambda v: v["sku"], reverse=True)
    assert small["id"].startswith("var_")
    assert (small["sku"], small["price_amount"], small["currency"]) == ("LAMP-S", 1999, "usd")
    assert (small["available"], small["in_stock"]) == (3, True)
    assert (large["currency"], large["available"], large["in_stock"]) == ("eur", 0, False)

    by_slug = await client.get("/v1/products/lamp")
    by_id = await client.get(f"/v1/products/{product['id']}")
    assert by_slug.status_code == by_id.status_code == 200
    assert by_slug.json() == by_id.json() == product
    assert (await client.get("/v1/products/nothing")).status_code == 404


async def test_availability_follows_holds(client, admin) -> None:
    await client.post("/v1/products", json=PRODUCT, headers=admin.headers)
    body = {"lines": [{"sku": "LAMP-S", "quantity": 3}]}
    assert (await client.post("/v1/holds", json=body, headers=admin.headers)).status_code == 201
    variant = next(
        v
        for v in (await client.get("/v1/products/lamp")).json()["variants"]
        if v["sku"] == "LAMP-S"
    )
    assert (variant["available"], variant["in_stock"]) == (0, False)


async def test_duplicate_slug_or_sku_is_409(client, admin) -> None:
    assert (
        await client.post("/v1/products", json=PRODUCT, headers=admin.headers)
    ).status_code == 201
    same_slug = dict(PRODUCT, variants=[{"sku": "OTHER", "name": "x", "price_amount": 1}])
    response = await client.post("/v1/products", json=same_slug, headers=admin.headers)
    assert (response.status_code, response.json()["code"]) == (409, "conflict")
    same_sku = dict(PRODUCT, slug="other")
    response = await client.post("/v1/products", json=same_sku, headers=admin.headers)
    assert response.status_code == 409
    assert response.json()["skus"] == ["LAMP-L", "LAMP-S"]
    twice = dict(PRODUCT, slug="twice", variants=[PRODUCT["variants"][0]] * 2)
    response = await client.post("/v1/products", json=twice, headers=admin.headers)
    assert response.status_code == 409


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"slug": "Not A Slug"}, "slug"),
        ({"name": ""}, "name"),
        ({"variants": []}, "variants"),
        ({"variants": [{"sku": "X", "name": "x", "price_amount": -1}]}, "variants.0.price_amount"),
        (
            {"variants": [{"sku": "X", "name": "x", "price_amount": 19.99}]},
            "variants.0.price_amount",
        ),
        (
            {"variants": [{"sku": "X", "name": "x", "price_amount": "1999"}]},
            "variants.0.price_amount",
        ),
        (
            {"variants": [{"sku": "X", "name": "x", "price_amount": 2**64}]},
            "variants.0.price_amount",
        ),
        (
            {"variants": [{"sku": "X", "name": "x", "price_amount": 1, "on_hand": -5}]},
            "variants.0.on_hand",
        ),
        (
            {"variants": [{"sku": "X", "name": "x", "price_amount": 1, "currency": "EURO"}]},
            "variants.0.currency",
        ),
        ({"variants": [{"sku": "bad sku!", "name": "x", "price_amount": 1}]}, "variants.0.sku"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_bad_product_input_is_422_naming_the_field(client, admin, change, field) -> None:
    response = await client.post("/v1/products", json=PRODUCT | change, headers=admin.headers)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert field in [error["field"] for error in problem["errors"]]
    assert (await client.get("/v1/products")).json()["data"] == []


async def test_only_staff_create_products(client, make_user) -> None:
    assert (await client.post("/v1/products", json=PRODUCT)).status_code == 401
    customer = await make_user("customer")
    response = await client.post("/v1/products", json=PRODUCT, headers=customer.headers)
    assert (response.status_code, response.json()["code"]) == (403, "forbidden")


async def test_vendor_owns_and_manages_its_products(client, admin, make_user) -> None:
    vendor, rival = await make_user("vendor"), await make_user("vendor")
    created = (await client.post("/v1/products", json=PRODUCT, headers=vendor.headers)).json()
    assert created["vendor_id"] == vendor.id
    variant_id = created["variants"][0]["id"]

    denied = await client.patch(
        f"/v1/products/{created['id']}", json={"name": "Mine now"}, headers=rival.headers
    )
    assert denied.status_code == 404
    response = await client.patch(
        f"/v1/products/{created['id']}", json={"name": "Lamp 2"}, headers=vendor.headers
    )
    assert response.json()["name"] == "Lamp 2"
    response = await client.patch(
        f"/v1/variants/{variant_id}", json={"price_amount": 2500}, headers=vendor.headers
    )
    assert response.status_code == 200 and response.json()["price_amount"] == 2500
    response = await client.patch(
        f"/v1/variants/{variant_id}", json={"price_amount": 1}, headers=rival.headers
    )
    assert response.status_code == 404
    response = await client.patch(
        f"/v1/variants/{variant_id}", json={"price_amount": -1}, headers=admin.headers
    )
    assert response.status_code == 422


async def test_admin_assigns_a_vendor(client, admin, make_user) -> None:
    vendor = await make_user("vendor")
    customer = await make_user("customer")
    body = PRODUCT | {"vendor_id": vendor.id}
    created = await client.post("/v1/products", json=body, headers=admin.headers)
    assert created.json()["vendor_id"] == vendor.id
    other = PRODUCT | {
        "slug": "x",
        "vendor_id": customer.id,
        "variants": [{"sku": "X1", "name": "x", "price_amount": 1}],
    }
    response = await client.post("/v1/products", json=other, headers=admin.headers)
    assert response.status_code == 422


async def test_inactive_products_and_variants_are_hidden_from_buyers(client, admin) -> None:
    product = (await client.post("/v1/products", json=PRODUCT, headers=admin.headers)).json()
    small = next(v for v in product["variants"] if v["sku"] == "LAMP-S")
    await client.patch(f"/v1/variants/{small['id']}", json={"active": False}, headers=admin.headers)
    public = (await client.get("/v1/products/lamp")).json()
    assert [v["sku"] for v in public["variants"]] == ["LAMP-L"]
    staff = (await client.get("/v1/products/lamp", headers=admin.headers)).json()
    assert len(staff["variants"]) == 2

    await client.patch(
        f"/v1/products/{product['id']}", json={"active": False}, headers=admin.headers
    )
    assert (await client.get("/v1/products/lamp")).status_code == 404
    assert (await client.get("/v1/products")).json()["data"] == []
    assert (await client.get("/v1/products/lamp", headers=admin.headers)).status_code == 200


async def test_list_paginates_with_a_cursor(client, make_product) -> None:
    for _ in range(5):
        await make_product(("S" + str(_), 1))
    seen, cursor = [], None
    while True:
        url = "/v1/products?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get(url)).json()
        assert len(page["data"]) <= 2
        seen += [p["id"] for p in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5
    for bad in ("?limit=0", "?limit=101", "?limit=abc", "?cursor=%%%"):
        response = await client.get("/v1/products" + bad)
        assert response.status_code == 422, bad


async def test_stock_of_an_inactive_product_is_hidden_too(client, admin, make_user) -> None:
    product = (await client.post("/v1/products", json=PRODUCT, headers=admin.headers)).json()
    await client.patch(
        f"/v1/products/{product['id']}", json={"active": False}, headers=admin.headers
    )
    assert (await client.get("/v1/inventory/LAMP-S")).status_code == 404
    customer = await make_user("customer")
    assert (await client.get("/v1/inventory/LAMP-S", headers=customer.headers)).status_code == 404
    assert (await client.get("/v1/inventory/LAMP-S", headers=admin.headers)).status_code == 200


async def test_product_price_sets_every_variant_and_thresholds_change(client, admin) -> None:
    product = (await client.post("/v1/products", json=PRODUCT, headers=admin.headers)).json()
    response = await client.patch(
        f"/v1/products/{product['id']}", json={"price_amount": 4200}, headers=admin.headers
    )
    assert [v["price_amount"] for v in response.json()["variants"]] == [4200, 4200]
    variant_id = response.json()["variants"][0]["id"]
    response = await client.patch(
        f"/v1/variants/{variant_id}", json={"low_stock_threshold": 7}, headers=admin.headers
    )
    assert response.json()["low_stock_threshold"] == 7
    low = (await client.get("/v1/inventory/low-stock", headers=admin.headers)).json()["data"]
    assert variant_id in [item["variant_id"] for item in low]
