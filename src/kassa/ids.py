"""Opaque, sortable resource ids: a type prefix and a ULID (`prod_01J…`)."""

from __future__ import annotations

import os
import threading
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80


class _MonotonicUlid:
    """ULIDs that sort in creation order within a process, even within one millisecond."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._last_random = 0

    def next(self) -> int:
        with self._lock:
            ms = int(time.time() * 1000)
            if ms <= self._last_ms:
                # Same (or an earlier, if the wall clock stepped back) millisecond: count on.
                ms, random = self._last_ms, self._last_random + 1
            else:
                random = int.from_bytes(os.urandom(10), "big") >> 1  # room to count on
            self._last_ms, self._last_random = ms, random
            return (ms << _RANDOM_BITS) | random


_generator = _MonotonicUlid()


def ulid() -> str:
    """A 26-character ULID: 48 bits of milliseconds then 80 bits, Crockford base32."""
    value = _generator.next()
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    return f"{prefix}_{ulid()}"
