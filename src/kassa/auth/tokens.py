"""Signed bearer tokens (JWT, HS256).

Each token carries a `typ` claim so that access tokens and, later, refresh tokens (which add a
`fam` family id stored server-side for rotation and revocation) can never be used for each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

from kassa import clock
from kassa.ids import ulid

ALGORITHM = "HS256"
ISSUER = "kassa"


class InvalidToken(Exception):
    """The token is malformed, forged, expired or of the wrong type."""


@dataclass(frozen=True)
class TokenClaims:
    user_id: str
    role: str
    token_type: str
    token_id: str
    expires_at: datetime


def issue_token(
    *, secret: str, user_id: str, role: str, token_type: str, ttl_seconds: int
) -> tuple[str, TokenClaims]:
    issued = clock.now()
    claims = TokenClaims(
        user_id=user_id,
        role=role,
        token_type=token_type,
        token_id=ulid(),
        expires_at=issued + timedelta(seconds=ttl_seconds),
    )
    payload = {
        "iss": ISSUER,
        "sub": user_id,
        "role": role,
        "typ": token_type,
        "jti": claims.token_id,
        "iat": int(issued.timestamp()),
        "exp": int(claims.expires_at.timestamp()),
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM), claims


def decode_token(token: str, *, secret: str, token_type: str) -> TokenClaims:
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "typ", "jti"], "verify_exp": False},
        )
    except jwt.PyJWTError as error:
        raise InvalidToken(str(error)) from None
    # Expiry is checked against Kassa's clock, not the wall clock, so tests can move time. A
    # correctly signed token can still carry any `exp` (a string, 10**20): not a time, refused.
    exp = payload["exp"]
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise InvalidToken("the token's exp is not a time")
    try:
        expires_at = datetime.fromtimestamp(int(exp), tz=clock.now().tzinfo)
    except (OverflowError, OSError, ValueError):
        raise InvalidToken("the token's exp is not a time") from None
    if expires_at <= clock.now():
        raise InvalidToken("token expired")
    if payload.get("typ") != token_type:
        raise InvalidToken("wrong token type")
    return TokenClaims(
        user_id=str(payload["sub"]),
        role=str(payload.get("role", "")),
        token_type=token_type,
        token_id=str(payload["jti"]),
        expires_at=expires_at,
    )
