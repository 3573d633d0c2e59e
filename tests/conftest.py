"""Shared fixtures: the anyio backend (asyncio only: aiosqlite is asyncio-bound) and stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actorsource import EventStore, InMemoryEventStore, SQLiteEventStore


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "sqlite"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_store(kind: str, tmp_path: Path) -> EventStore:
    """Return an unopened store of the given kind (each test gets a fresh database)."""
    if kind == "memory":
        return InMemoryEventStore()
    if kind == "sqlite":
        return SQLiteEventStore(tmp_path / "events.db")
    raise AssertionError(f"unknown store kind {kind}")


@pytest.fixture
async def store(store_kind: str, tmp_path: Path) -> AsyncIterator[EventStore]:
    """An open store of each kind."""
    async with make_store(store_kind, tmp_path) as opened:
        yield opened
