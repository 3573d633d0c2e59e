"""The baselines each run measures beside the workloads, on SQLite with the same schema, rows
and durability (WAL, synchronous=FULL): the raw batched-insert ceiling, the per-commit fsync
floor, and (when installed) the ``eventsourcing`` package as the Python peer."""

from __future__ import annotations

import importlib
import time
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


async def baseline_fsync_floor(path: Path, count: int) -> Result:
    """Raw aiosqlite: one transaction (one fsync) per row, sequential: execute, then commit.

    The least a durable single-row write costs through aiosqlite (two thread hops and an fsync).
    """
    await sqlite_schema(path)
    rows = rows_like_w1(count)
    async with aiosqlite.connect(path) as conn:
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = FULL")
        started = time.perf_counter()
        for row in rows:
            await conn.execute(INSERT, row)
            await conn.commit()
        elapsed = time.perf_counter() - started
    return {"rows": count, "events_per_s": count / elapsed}


#: rounds W1-seq and the fsync floor alternate in (see workload_sequential_with_floor)


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
