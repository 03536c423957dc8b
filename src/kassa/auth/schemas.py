"""Request and response bodies of the auth endpoints."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from kassa.fields import Input


class LoginRequest(Input):
    # Any string: an account is found by its address or not at all, and the sign-in form must
    # never refuse an address that `kassa users create` accepted.
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class UserOut(BaseModel):
    id: str
    email: str
    role: str
