"""Users: create, authenticate, look up; the first admin from the environment."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from kassa.auth import passwords
from kassa.auth.models import ROLES, User
from kassa.auth.passwords import needs_rehash
from kassa.db import Database
from kassa.errors import Conflict, InvalidInput, KassaError, Unauthenticated
from kassa.ids import new_id

MIN_PASSWORD_LENGTH = 10


class EmailTaken(Conflict):
    title = "Email already registered"


class InvalidCredentials(Unauthenticated):
    title = "Invalid email or password"


def normalize_email(email: str) -> str:
    return email.strip().lower()


async def create_user(session: AsyncSession, *, email: str, password: str, role: str) -> User:
    if role not in ROLES:
        raise KassaError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput("password", f"needs at least {MIN_PASSWORD_LENGTH} characters")
    try:
        # Syntax only: no DNS lookup, so staff addresses on private domains are fine.
        validate_email(email, check_deliverability=False, globally_deliverable=False)
    except EmailNotValidError as error:
        raise InvalidInput("email", str(error)) from None
    user = User(
        id=new_id("usr"),
        email=normalize_email(email),
        # argon2 costs tens of milliseconds of CPU: never on the event loop.
        password_hash=await passwords.hash_password_off_loop(password),
        role=role,
        is_active=True,
    )
    session.add(user)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise EmailTaken(f"a user with email {user.email} already exists") from None
    return user


async def get_user(session: AsyncSession, user_id: str) -> User | None:
    return await session.get(User, user_id)


async def find_user_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.execute(select(User).where(User.email == normalize_email(email)))
    return result.scalar_one_or_none()


async def authenticate(db: Database, *, email: str, password: str) -> User:
    """The user with this email and password. The password is checked in a worker thread,
    outside any transaction (argon2 costs tens of milliseconds of CPU: on the event loop a
    handful of logins would stall every request, and inside a write transaction they would
    hold SQLite's one writer lock), and costs the same whether or not the email exists."""
    async with db.read() as session:
        user = await find_user_by_email(session, email)
    stored = user.password_hash if user else None
    if not await passwords.verify_password_off_loop(stored, password):
        raise InvalidCredentials("invalid email or password")
    assert user is not None
    if not user.is_active:
        raise InvalidCredentials("invalid email or password")
    if needs_rehash(user.password_hash):
        fresh = await passwords.hash_password_off_loop(password)
        user_id = user.id

        async def store(session: AsyncSession) -> None:
            await session.execute(
                update(User).where(User.id == user_id).values(password_hash=fresh)
            )

        await db.run(store)
        user.password_hash = fresh
    return user


class AdminEmailTaken(Conflict):
    title = "The admin email belongs to another account"


async def ensure_admin(session: AsyncSession, *, email: str, password: str) -> User | None:
    """Create the first admin from the environment; does nothing once any admin exists.

    An existing account with that email is never promoted: whoever registered it first would
    become admin, and the password set in the environment would not be theirs.
    """
    admins = await session.scalar(
        select(func.count()).select_from(User).where(User.role == "admin")
    )
    if admins:
        return None
    existing = await find_user_by_email(session, email)
    if existing is not None and existing.role == "admin":
        return None  # another process created this very admin a moment ago
    if existing is not None:
        raise AdminEmailTaken(
            f"{normalize_email(email)} is a non-admin account; create the admin with "
            "`kassa users create --role admin`"
        )
    return await create_user(session, email=email, password=password, role="admin")
