"""Fixtures of the torture tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.torture._engine import RetryCounter


@pytest.fixture
def retries() -> Iterator[RetryCounter]:
    """Counts the transient errors (deadlocks, serialization failures, a locked SQLite) that
    `Database.run` retried in this process: a caller never sees them, this test does."""
    counter = RetryCounter()
    counter.install()
    yield counter
    counter.uninstall()
