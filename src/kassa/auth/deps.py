"""Request dependencies: the current user and the reusable role requirement."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kassa.auth.principal import Principal
from kassa.auth.tokens import InvalidToken, decode_token
from kassa.errors import Forbidden, Unauthenticated

_bearer = HTTPBearer(auto_error=False, description="An access token from POST /v1/auth/login")


async def optional_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    if credentials is None:
        return None
    settings = request.app.state.settings
    try:
        claims = decode_token(
            credentials.credentials,
            secret=settings.secret_key.get_secret_value(),
            token_type="access",
        )
    except InvalidToken:
        raise Unauthenticated("the access token is invalid or expired") from None
    # The token says who; the database says what they may do now (seen at most a few seconds
    # ago): a disabled or deleted account is refused, a changed role applies at once.
    standing = await request.app.state.standings.of(claims.user_id)
    if standing.role is None or not standing.active:
        raise Unauthenticated("this account is disabled or no longer exists")
    return Principal(user_id=claims.user_id, role=standing.role)


async def current_principal(
    principal: Annotated[Principal | None, Depends(optional_principal)],
) -> Principal:
    if principal is None:
        raise Unauthenticated("sign in and send `Authorization: Bearer <access_token>`")
    return principal


def require_role(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets through only callers with one of `roles`."""

    async def dependency(
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> Principal:
        if principal.role not in roles:
            raise Forbidden(f"this needs the role {' or '.join(roles)}")
        return principal

    return dependency


OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal)]
CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
AdminPrincipal = Annotated[Principal, Depends(require_role("admin"))]
StaffPrincipal = Annotated[Principal, Depends(require_role("admin", "vendor"))]
