"""`Idempotency-Key` on unsafe requests, with Stripe's semantics (API.md "Conventions").

For a (caller, key) pair the first completed response is stored for 24 hours and replayed
byte-for-byte with `Idempotent-Replayed: true`. The same key with another method, path, query or
body is 422 `idempotency_key_reused`; while the first request is still running, 409
`idempotency_key_in_use`. 5xx responses are not stored (the key may be used again). The
caller is the signed-in user, else the cart token, else the client address.

The record lives in the database (promise 5: uniqueness in the database, not in memory): one
insert "on conflict do nothing" claims the key, so two processes racing with the same key run
the request once. A running request renews its lease every `RENEW_EVERY`; a request that dies
with its process stops renewing, and its record may be taken over once the lease has passed.
Each run owns its record by a random token, so only the run that holds it stores or forgets it.

Not applied to `/v1/auth/` (a replayed login would hand out tokens without the password), and
for callers known only by their address a response that sets a cookie is not stored (it could
carry a cart token to someone else behind the same address).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Table, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kassa import clock
from kassa.auth.tokens import InvalidToken, decode_token
from kassa.db import Database, insert_new
from kassa.errors import problem
from kassa.ops.models import IdempotencyRecord

records = cast(Table, IdempotencyRecord.__table__)

HEADER = b"idempotency-key"
UNSAFE = frozenset({"POST", "PATCH", "PUT", "DELETE"})
RETENTION = timedelta(hours=24)
LEASE = timedelta(seconds=60)
RENEW_EVERY = 20.0  # seconds
SKIPPED_PREFIXES = ("/v1/auth/",)
MAX_KEY = 255
# Headers that describe this delivery, not the response: not stored, not replayed.
_NOT_STORED = {b"date", b"server"}


@dataclass(frozen=True)
class Stored:
    status: int
    headers: list[list[str]]
    body: bytes


@dataclass(frozen=True)
class Verdict:
    action: str  # "run", "replay", "reused", "in_use"
    stored: Stored | None = None


async def claim(
    session: AsyncSession, caller: str, key: str, fingerprint: str, owner: str
) -> Verdict:
    now = clock.now()
    fresh = {
        "caller": caller,
        "key": key,
        "fingerprint": fingerprint,
        "state": "running",
        "created_at": now,
        "locked_until": now + LEASE,
        "owner": owner,
    }
    if await insert_new(session, records, fresh):
        return Verdict("run")
    query = select(IdempotencyRecord).where(
        IdempotencyRecord.caller == caller, IdempotencyRecord.key == key
    )
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    record = await session.scalar(query)
    if record is None:  # removed (a 5xx) between the insert and this read: claim it again
        return Verdict("run") if await insert_new(session, records, fresh) else Verdict("in_use")
    if record.created_at + RETENTION <= now:
        await _take_over(session, caller, key, fresh)
        return Verdict("run")
    if record.fingerprint != fingerprint:
        return Verdict("reused")
    if record.state == "done":
        assert record.status_code is not None and record.body is not None
        return Verdict("replay", Stored(record.status_code, record.headers or [], record.body))
    if record.locked_until is not None and record.locked_until <= now:
        await _take_over(session, caller, key, fresh)
        return Verdict("run")
    return Verdict("in_use")


async def _take_over(session: AsyncSession, caller: str, key: str, fresh: dict[str, Any]) -> None:
    await session.execute(
        update(records)
        .where(records.c.caller == caller, records.c.key == key)
        .values(
            fingerprint=fresh["fingerprint"],
            state="running",
            status_code=None,
            headers=None,
            body=None,
            created_at=fresh["created_at"],
            locked_until=fresh["locked_until"],
            owner=fresh["owner"],
        )
    )


async def renew(session: AsyncSession, caller: str, key: str, owner: str) -> None:
    await session.execute(
        update(records)
        .where(records.c.caller == caller, records.c.key == key, records.c.owner == owner)
        .values(locked_until=clock.now() + LEASE)
    )


async def finish(
    session: AsyncSession, caller: str, key: str, owner: str, stored: Stored | None
) -> None:
    """Store the response, or (None: a 5xx or a crash of the endpoint) forget the key; only
    while this run still owns the record."""
    where = (
        records.c.caller == caller,
        records.c.key == key,
        records.c.state == "running",
        records.c.owner == owner,
    )
    if stored is None:
        await session.execute(delete(records).where(*where))
        return
    await session.execute(
        update(records)
        .where(*where)
        .values(
            state="done",
            status_code=stored.status,
            headers=stored.headers,
            body=stored.body,
            locked_until=None,
        )
    )


async def purge_expired(session: AsyncSession, *, limit: int = 1000) -> int:
    """Forget records older than 24 hours (the sweeper calls this)."""
    cutoff = clock.now() - RETENTION
    old = select(records.c.caller, records.c.key).where(records.c.created_at < cutoff).limit(limit)
    rows = (await session.execute(old)).all()
    for caller, key in rows:
        await session.execute(
            delete(records).where(records.c.caller == caller, records.c.key == key)
        )
    return len(rows)


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in UNSAFE
            or scope["path"].startswith(SKIPPED_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        raw_key = headers.get(HEADER)
        if raw_key is None:
            await self.app(scope, receive, send)
            return
        key = raw_key.decode("latin-1")
        if not 1 <= len(key) <= MAX_KEY or not key.isprintable():
            response = problem(
                422,
                "validation_error",
                "Invalid request",
                f"Idempotency-Key must be 1 to {MAX_KEY} printable characters",
                errors=[
                    {
                        "field": "Idempotency-Key",
                        "loc": ["header", "Idempotency-Key"],
                        "message": f"1 to {MAX_KEY} printable characters",
                        "type": "value_error",
                    }
                ],
            )
            await response(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client went away before its request was whole: nothing to claim
        app_state = scope["app"].state
        db: Database = app_state.db
        caller = _caller(scope, headers, app_state.settings.secret_key.get_secret_value())
        fingerprint = hashlib.sha256(
            b"\n".join(
                [scope["method"].encode(), scope["path"].encode(), scope["query_string"], body]
            )
        ).hexdigest()
        owner = secrets.token_hex(16)
        verdict = await db.run(lambda s: claim(s, caller, key, fingerprint, owner))
        if verdict.action == "reused":
            await problem(
                422,
                "idempotency_key_reused",
                "Idempotency key reused",
                "this Idempotency-Key was used with another method, path or body",
            )(scope, receive, send)
            return
        if verdict.action == "in_use":
            await problem(
                409,
                "idempotency_key_in_use",
                "Idempotency key in use",
                "a request with this Idempotency-Key is still running; try again shortly",
            )(scope, receive, send)
            return
        if verdict.action == "replay":
            assert verdict.stored is not None
            await _replay(verdict.stored, send)
            return
        await self._run(scope, body, send, db, Claim(caller, key, owner))

    async def _run(
        self, scope: Scope, body: bytes, send: Send, db: Database, claimed: Claim
    ) -> None:
        status = 500
        response_headers: list[list[str]] = []
        chunks: list[bytes] = []
        delivered = False

        async def replay_body() -> Message:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers.extend(
                    [name.decode("latin-1"), value.decode("latin-1")]
                    for name, value in message.get("headers", [])
                    if name.lower() not in _NOT_STORED
                )
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        caller, key, owner = claimed.caller, claimed.key, claimed.owner
        heartbeat = asyncio.create_task(_keep_leased(db, claimed))
        try:
            await self.app(scope, replay_body, capture)
        except BaseException:
            heartbeat.cancel()
            await db.run(lambda s: finish(s, caller, key, owner, None))
            raise
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        sets_cookie = any(name.lower() == "set-cookie" for name, _ in response_headers)
        keep = status < 500 and not (caller.startswith("addr:") and sets_cookie)
        stored = Stored(status, response_headers, b"".join(chunks)) if keep else None
        await db.run(lambda s: finish(s, caller, key, owner, stored))


@dataclass(frozen=True)
class Claim:
    caller: str
    key: str
    owner: str


async def _keep_leased(db: Database, claimed: Claim) -> None:
    """Renew the lease while the request runs, so a slow request is never taken over."""
    while True:
        await asyncio.sleep(RENEW_EVERY)
        with contextlib.suppress(Exception):
            await db.run(lambda s: renew(s, claimed.caller, claimed.key, claimed.owner))


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client disconnected before sending all of it."""
    parts = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _replay(stored: Stored, send: Send) -> None:
    headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in stored.headers]
    headers.append((b"idempotent-replayed", b"true"))
    await send({"type": "http.response.start", "status": stored.status, "headers": headers})
    await send({"type": "http.response.body", "body": stored.body, "more_body": False})


def _caller(scope: Scope, headers: dict[bytes, bytes], secret: str) -> str:
    """The signed-in user, else the cart token (hashed), else the client address."""
    authorization = headers.get(b"authorization", b"").decode("latin-1")
    if authorization.lower().startswith("bearer "):
        try:
            claims = decode_token(authorization[7:].strip(), secret=secret, token_type="access")
            return f"user:{claims.user_id}"
        except InvalidToken:
            pass
    token = headers.get(b"x-cart-token") or _cookie(headers.get(b"cookie", b""), b"kassa_cart")
    if token:
        return "cart:" + hashlib.sha256(token).hexdigest()[:64]
    client = scope.get("client")
    return f"addr:{client[0] if client else 'unknown'}"


def _cookie(header: bytes, name: bytes) -> bytes | None:
    for part in header.split(b";"):
        key, _, value = part.strip().partition(b"=")
        if key == name and value:
            return value
    return None
