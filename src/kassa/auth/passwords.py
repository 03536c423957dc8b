"""Password hashing with argon2id, in a few worker threads of its own.

One check costs about 100 ms of CPU and 64 MiB of memory (argon2's defaults). Run on the event
loop, a handful of logins stalled every other request; run in the default thread pool, forty
logins took six threads (384 MiB) and both cores, and the loop still waited. So checks run at
most `HASHING_THREADS` at a time (half the cores, at least one), leaving the rest of the machine
to everyone else; further logins queue behind them.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()

# Verified against when the email is unknown, so a miss costs as much time as a wrong password.
_DUMMY_HASH = _hasher.hash("kassa-timing-equaliser")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


HASHING_THREADS = max(1, (os.cpu_count() or 2) // 2)
_hashing = ThreadPoolExecutor(max_workers=HASHING_THREADS, thread_name_prefix="argon2")


async def hash_password_off_loop(password: str) -> str:
    return await asyncio.get_running_loop().run_in_executor(_hashing, hash_password, password)


async def verify_password_off_loop(password_hash: str | None, password: str) -> bool:
    return await asyncio.get_running_loop().run_in_executor(
        _hashing, verify_password, password_hash, password
    )
