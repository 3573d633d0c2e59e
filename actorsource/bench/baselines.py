"""The baselines each run measures beside the workloads, on SQLite with the same schema, rows
and durability (WAL, synchronous=FULL): the raw batched-insert ceiling, the per-commit floors
(through aiosqlite, and plain sqlite3 in the calling thread), and (when installed) the
``eventsourcing`` package as the Python peer."""

from __future__ import annotations

import importlib
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from .. import SQLiteEventStore
from .._ids import new_event_id
from ._common import Result


def rows_like_w1(count: int) -> list[tuple[Any, ...]]:
    """``count`` rows as W1 stores them: 1,000 streams, the runtime's metadata, fresh ids."""
    now = datetime.now(UTC).isoformat()
    data = orjson.dumps({"amount": 1}).decode()
    return [
        (
            i + 1,
            f"BenchAccount-acc-{i % 1000}",
            i // 1000 + 1,
            "Deposited",
            data,
            _root_metadata(),
            new_event_id(),
            now,
        )
        for i in range(count)
    ]


def _root_metadata() -> str:
    """The metadata the runtime stores for a command sent with no ids: three equal new ids."""
    command_id = new_event_id()
    ids = {"correlation_id": command_id, "causation_id": command_id, "command_id": command_id}
    return orjson.dumps(ids).decode()


INSERT = (
    "INSERT INTO events (position, stream_id, version, type, data, metadata, event_id, "
    "recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


async def sqlite_schema(path: Path) -> None:
    """Create the SQLite store's schema in a fresh file, for the baselines to fill."""
    async with SQLiteEventStore(path):
        pass


async def baseline_ceiling(path: Path, count: int, batch: int) -> Result:
    """Raw aiosqlite: the same rows, same schema and durability, ``batch`` rows a transaction."""
    await sqlite_schema(path)
    rows = rows_like_w1(count)
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = FULL")
        started = time.perf_counter()
        for start in range(0, count, batch):
            await conn.execute("BEGIN IMMEDIATE")
            await conn.executemany(INSERT, rows[start : start + batch])
            await conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
    return {"rows": count, "batch": batch, "events_per_s": count / elapsed}


class AiosqliteFloor:
    """The fsync floor: one transaction (one fsync) a row through aiosqlite, execute then commit.

    The least a durable single-row write costs through aiosqlite (two thread hops and an fsync).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: aiosqlite.Connection | None = None

    async def open(self) -> None:
        """Create the schema and connect at the store's durability."""
        await sqlite_schema(self.path)
        self._conn = await aiosqlite.connect(self.path)
        await self._conn.execute("PRAGMA journal_mode = WAL")
        await self._conn.execute("PRAGMA synchronous = FULL")

    async def write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Write ``rows``, a transaction each."""
        assert self._conn is not None, "open() first"
        for row in rows:
            await self._conn.execute(INSERT, row)
            await self._conn.commit()

    async def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


class InThreadFloor:
    """The raw floor: plain ``sqlite3`` in the calling thread, ``BEGIN; INSERT; COMMIT`` a row.

    What one durable row costs with no thread hop at all; it blocks the loop while it runs, so
    nothing else may be measured meanwhile.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Create the schema and connect at the store's durability."""
        await sqlite_schema(self.path)
        self._conn = sqlite3.connect(self.path, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = FULL")

    async def write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Write ``rows``, a transaction each."""
        conn = self._conn
        assert conn is not None, "open() first"
        for row in rows:
            conn.execute("BEGIN")
            conn.execute(INSERT, row)
            conn.execute("COMMIT")

    async def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


Floor = AiosqliteFloor | InThreadFloor


async def _floor_alone(floor: Floor, count: int) -> Result:
    rows = rows_like_w1(count)
    await floor.open()
    try:
        started = time.perf_counter()
        await floor.write(rows)
        elapsed = time.perf_counter() - started
    finally:
        await floor.close()
    return {"rows": count, "events_per_s": count / elapsed}


async def baseline_fsync_floor(path: Path, count: int) -> Result:
    """The fsync floor (:class:`AiosqliteFloor`) over ``count`` rows, alone."""
    return await _floor_alone(AiosqliteFloor(path), count)


async def baseline_raw_floor(path: Path, count: int) -> Result:
    """The raw in-thread floor (:class:`InThreadFloor`) over ``count`` rows, alone."""
    return await _floor_alone(InThreadFloor(path), count)


_peer_classes: dict[str, Any] = {}


def _peer_account_class() -> Any:
    """Define the peer's aggregate once (eventsourcing registers classes by topic)."""
    if "account" not in _peer_classes:
        # optional (the bench extra), imported only when the peer baseline runs
        domain = importlib.import_module("eventsourcing.domain")
        event = domain.event

        class PeerAccount(domain.Aggregate):  # type: ignore[misc,name-defined]
            @event("Opened")  # type: ignore[untyped-decorator]
            def __init__(self) -> None:
                self.balance = 0

            @event("Deposited")  # type: ignore[untyped-decorator]
            def deposit(self, amount: int) -> None:
                self.balance += amount

        _peer_classes["account"] = PeerAccount
    return _peer_classes["account"]


def baseline_peer(path: Path, commands: int, aggregates: int, *, cache: bool) -> Result | None:
    """The ``eventsourcing`` package (if installed) on its SQLite recorder, sequentially.

    Its recorder uses WAL and SQLite's default ``synchronous=FULL``: the same durability.
    """
    try:
        application = importlib.import_module("eventsourcing.application")
        account_class = _peer_account_class()
    except ImportError:
        return None
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(path),
        "SQLITE_LOCK_TIMEOUT": "10",
    }
    if cache:
        env["AGGREGATE_CACHE_MAXSIZE"] = str(aggregates)
    app = application.Application(env=env)
    ids = []
    for _ in range(aggregates):
        account = account_class()
        app.save(account)
        ids.append(account.id)
    started = time.perf_counter()
    for i in range(commands):
        account = app.repository.get(ids[i % aggregates])
        account.deposit(1)
        app.save(account)
    elapsed = time.perf_counter() - started
    app.close()
    return {"commands": commands, "cache": cache, "commands_per_s": commands / elapsed}
