"""User, login and API token schemas."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from loupe.api.schemas.common import ORMModel


class UserPublic(ORMModel):
    id: int
    email: str
    name: str
    role: str
    is_active: bool
    created_at: dt.datetime


class UsersPublic(BaseModel):
    data: list[UserPublic]
    count: int


class UserRegister(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(min_length=8, max_length=256)
    name: str = Field(default="", max_length=200)


class UserCreate(UserRegister):
    admin: bool = False


class UserUpdate(BaseModel):
    name: str | None = Field(default=None, max_length=200)
    role: str | None = Field(default=None, pattern="^(admin|member)$")
    is_active: bool | None = None
    password: str | None = Field(default=None, min_length=8, max_length=256)


class LoginRequest(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=256)


class SessionPublic(BaseModel):
    user: UserPublic
    csrf_token: str


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    expires_days: int | None = Field(default=None, ge=1, le=3650)


class TokenPublic(ORMModel):
    id: int
    name: str
    prefix: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    expires_at: dt.datetime | None


class TokenCreated(TokenPublic):
    token: str = Field(description="The secret; shown once")


class TokensPublic(BaseModel):
    data: list[TokenPublic]
    count: int
