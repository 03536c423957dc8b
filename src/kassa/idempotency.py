"""`Idempotency-Key` on unsafe requests, with Stripe's semantics (API.md "Conventions").

For a (caller, key) pair the first completed response is stored for 24 hours and replayed
byte-for-byte with `Idempotent-Replayed: true`. The same key with another method, path, query or
body is 422 `idempotency_key_reused`; while the first request is still running, 409
`idempotency_key_in_use`. 5xx responses are not stored (the key may be used again). The
caller is the signed-in user, else the cart token, else the client address.

The record lives in the database (promise 5: uniqueness in the database, not in memory): one
insert "on conflict do nothing" claims the key, so two processes racing with the same key run
the request once. A request that dies with its process leaves a running record, which may be
taken over once its lease (`LEASE`) has passed.
"""

from __future__ import annotations

import hashlib
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


async def claim(session: AsyncSession, caller: str, key: str, fingerprint: str) -> Verdict:
    now = clock.now()
    fresh = {
        "caller": caller,
        "key": key,
        "fingerprint": fingerprint,
        "state": "running",
        "created_at": now,
        "locked_until": now + LEASE,
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
        )
    )


async def finish(session: AsyncSession, caller: str, key: str, stored: Stored | None) -> None:
    """Store the response, or (None: a 5xx or a crash of the endpoint) forget the key."""
    where = (records.c.caller == caller, records.c.key == key, records.c.state == "running")
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
        if scope["type"] != "http" or scope["method"] not in UNSAFE:
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
        app_state = scope["app"].state
        db: Database = app_state.db
        caller = _caller(scope, headers, app_state.settings.secret_key.get_secret_value())
        fingerprint = hashlib.sha256(
            b"\n".join(
                [scope["method"].encode(), scope["path"].encode(), scope["query_string"], body]
            )
        ).hexdigest()
        verdict = await db.run(lambda s: claim(s, caller, key, fingerprint))
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
        await self._run(scope, body, send, db, caller, key)

    async def _run(
        self, scope: Scope, body: bytes, send: Send, db: Database, caller: str, key: str
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

        try:
            await self.app(scope, replay_body, capture)
        except BaseException:
            await db.run(lambda s: finish(s, caller, key, None))
            raise
        stored = None if status >= 500 else Stored(status, response_headers, b"".join(chunks))
        await db.run(lambda s: finish(s, caller, key, stored))


async def _read_body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
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
