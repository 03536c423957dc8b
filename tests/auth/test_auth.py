"""Login, tokens, the current user and role requirements."""

from __future__ import annotations

from datetime import timedelta

import jwt

from kassa import clock
from tests.conftest import SECRET


async def test_login_and_me(client, make_user) -> None:
    account = await make_user("vendor", email="Vera@Example.com")
    response = await client.post(
        "/v1/auth/login", json={"email": "vera@example.com", "password": "correct-horse-battery"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 900
    me = await client.get(
        "/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.json() == {"id": account.id, "email": "vera@example.com", "role": "vendor"}


async def test_wrong_password_and_unknown_email_look_the_same(client, make_user) -> None:
    await make_user("customer", email="c@example.com")
    wrong = await client.post(
        "/v1/auth/login", json={"email": "c@example.com", "password": "not-the-password"}
    )
    unknown = await client.post(
        "/v1/auth/login", json={"email": "nobody@example.com", "password": "not-the-password"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]
    assert "not-the-password" not in wrong.text


async def test_bad_tokens_are_401(client, make_user) -> None:
    account = await make_user("customer")
    forged = jwt.encode(
        {"sub": account.id, "role": "admin", "typ": "access"},
        "a-wrong-key-that-is-long-enough-for-hs256-0123",
    )
    for header in (f"Bearer {forged}", "Bearer nonsense", f"Bearer {account.token}x"):
        response = await client.get("/v1/auth/me", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.json()["code"] == "unauthenticated"
    assert (await client.get("/v1/auth/me")).status_code == 401


async def test_access_tokens_expire(client, make_user) -> None:
    account = await make_user("customer")
    assert (await client.get("/v1/auth/me", headers=account.headers)).status_code == 200
    clock.advance(timedelta(seconds=901))
    assert (await client.get("/v1/auth/me", headers=account.headers)).status_code == 401


async def test_a_token_of_another_type_is_refused(client, make_user) -> None:
    account = await make_user("admin")
    payload = jwt.decode(account.token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    refresh_like = jwt.encode(payload | {"typ": "refresh"}, SECRET, algorithm="HS256")
    response = await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {refresh_like}"})
    assert response.status_code == 401


async def test_bad_login_input_is_422(client) -> None:
    for body in ({"email": "not-an-email", "password": "x"}, {"email": "a@b.co"}, {}):
        response = await client.post("/v1/auth/login", json=body)
        assert response.status_code == 422
