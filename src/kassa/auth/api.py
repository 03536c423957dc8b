"""Auth endpoints: sign in and who am I."""

from __future__ import annotations

from fastapi import APIRouter, Request

from kassa.auth import service
from kassa.auth.deps import CurrentPrincipal
from kassa.auth.schemas import LoginRequest, TokenResponse, UserOut
from kassa.auth.tokens import issue_token
from kassa.deps import AppSettings, ReadSession, get_database
from kassa.errors import Unauthenticated

router = APIRouter(prefix="/v1/auth", tags=["auth"])


@router.post("/login", response_model=TokenResponse)
async def login(body: LoginRequest, request: Request, settings: AppSettings) -> TokenResponse:
    user = await service.authenticate(
        get_database(request), email=body.email, password=body.password
    )
    token, _ = issue_token(
        secret=settings.secret_key.get_secret_value(),
        user_id=user.id,
        role=user.role,
        token_type="access",
        ttl_seconds=settings.access_token_ttl_seconds,
    )
    return TokenResponse(access_token=token, expires_in=settings.access_token_ttl_seconds)


@router.get("/me", response_model=UserOut)
async def me(principal: CurrentPrincipal, session: ReadSession) -> UserOut:
    user = await service.get_user(session, principal.user_id)
    if user is None or not user.is_active:
        raise Unauthenticated("this account no longer exists")
    return UserOut(id=user.id, email=user.email, role=user.role)
