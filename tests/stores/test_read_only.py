"""Stores opened read-only (for tools that inspect them): they create, upgrade and write
nothing, refuse what holds no store, and read an older schema as it is."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from actorsource import (
    EventStore,
    IncompatibleStoreError,
    NewEvent,
    SnapshotRecord,
    SQLiteEventStore,
    StoreError,
)

from ..conftest import POSTGRES_DSN, SKIP_WITHOUT_POSTGRES, make_store, postgres_schema


def event(kind: str = "Deposited") -> NewEvent:
    return NewEvent(event_id=str(uuid.uuid4()), type=kind, data={"amount": 1}, metadata={})


def read_only(kind: str, tmp_path: Path, *, schema: str | None = None) -> EventStore:
    if kind == "sqlite":
        return SQLiteEventStore(tmp_path / "events.db", read_only=True)
    from actorsource import PostgresEventStore

    return PostgresEventStore(
        POSTGRES_DSN, schema=schema or postgres_schema(tmp_path), read_only=True
    )


KINDS = ["sqlite", pytest.param("postgres", marks=SKIP_WITHOUT_POSTGRES)]


@pytest.fixture(params=KINDS)
def store_kind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    from ..conftest import drop_schema, run_sync

    yield request.param
    if request.param == "postgres":
        run_sync(drop_schema(POSTGRES_DSN, postgres_schema(tmp_path)))


async def test_a_read_only_store_reads_what_a_writer_stored(
    store_kind: str, tmp_path: Path
) -> None:
    async with make_store(store_kind, tmp_path) as writer:
        await writer.append("Account-1", 0, [event(), event("Withdrew")])
        await writer.save_checkpoint("balances", 1)

    async with read_only(store_kind, tmp_path) as store:
        found = [e async for e in store.read_all()]
        assert [(e.stream_id, e.version, e.type) for e in found] == [
            ("Account-1", 1, "Deposited"),
            ("Account-1", 2, "Withdrew"),
        ]
        assert await store.list_checkpoints() == {"balances": 1}
        assert await store.head_position() == 2
        assert store.schema_version >= 1  # type: ignore[attr-defined]


async def test_a_read_only_store_refuses_every_write_and_changes_nothing(
    store_kind: str, tmp_path: Path
) -> None:
    async with make_store(store_kind, tmp_path) as writer:
        await writer.append("Account-1", 0, [event()])

    async with read_only(store_kind, tmp_path) as store:
        with pytest.raises(StoreError, match="opened read_only: it cannot write"):
            await store.append("Account-1", 1, [event()])
        with pytest.raises(StoreError, match="opened read_only: it cannot write"):
            await store.save_checkpoint("balances", 1)
        snapshot = SnapshotRecord("Account-1", 1, {"balance": 1}, 1)
        with pytest.raises(StoreError, match="opened read_only: it cannot write"):
            await store.save_snapshot(snapshot)

    async with make_store(store_kind, tmp_path) as again:
        assert await again.head_position() == 1
        assert await again.list_checkpoints() == {}
        assert await again.load_snapshot("Account-1") is None


async def test_a_read_only_sqlite_store_never_creates_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.db"
    with pytest.raises(StoreError, match=r"no actorsource database at '.*nope\.db'"):
        await SQLiteEventStore(path, read_only=True).open()
    assert not path.exists()


async def test_a_read_only_sqlite_store_refuses_an_empty_database(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()  # a valid SQLite file of zero pages

    with pytest.raises(IncompatibleStoreError, match="holds no actorsource store"):
        await SQLiteEventStore(path, read_only=True).open()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)
        assert conn.execute("PRAGMA application_id").fetchone() == (0,)


async def test_a_read_only_sqlite_store_reads_a_version_1_file_without_upgrading_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    async with SQLiteEventStore(path) as writer:
        await writer.append("Account-1", 0, [event()])
    with sqlite3.connect(path) as conn:  # what version 1 of the schema was
        conn.execute("DROP TABLE checkpoints")
        conn.execute("PRAGMA user_version = 1")

    async with SQLiteEventStore(path, read_only=True) as store:
        assert store.schema_version == 1
        assert [e.stream_id async for e in store.read_all()] == ["Account-1"]
        assert await store.list_checkpoints() == {}  # version 1 had none
        assert await store.load_checkpoint("balances") == 0

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "checkpoints" not in tables


@pytest.mark.parametrize(
    "store_kind", [pytest.param("postgres", marks=SKIP_WITHOUT_POSTGRES)], indirect=True
)
async def test_a_read_only_postgres_store_refuses_a_schema_without_a_store_naming_those_with_one(
    store_kind: str, tmp_path: Path
) -> None:
    async with make_store(store_kind, tmp_path):
        pass  # a store in this test's schema
    missing = postgres_schema(tmp_path) + "_typo"

    with pytest.raises(StoreError) as refused:
        await read_only(store_kind, tmp_path, schema=missing).open()

    message = str(refused.value)
    assert message.startswith(f"no actorsource store in schema {missing!r} of postgresql://")
    assert "schemas with a store: " in message
    assert postgres_schema(tmp_path) in message.partition("schemas with a store: ")[2]
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        created = await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", missing)
    finally:
        await conn.close()
    assert created is None
