"""The baselines each run measures beside the workloads, on SQLite with the same schema, rows
and durability (WAL, synchronous=FULL): the raw batched-insert ceiling, the per-commit floors
(through aiosqlite, and plain sqlite3 in the calling thread), and (when installed) the
``eventsourcing`` package as the Python peer."""

from __future__ import annotations

import importlib
import importlib.util
import sqlite3
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


class _Floor:
    """A floor: ``count`` rows like W1's, one transaction (one fsync) each, in order."""

    def __init__(self, path: Path, count: int) -> None:
        self.path, self.count = path, count
        self._rows: list[tuple[Any, ...]] = []

    async def _prepare(self) -> None:
        await sqlite_schema(self.path)
        self._rows = rows_like_w1(self.count)

    def result(self, seconds: float, rounds: int) -> Result:
        """What :attr:`count` rows in ``seconds`` over ``rounds`` rounds amount to."""
        return {"rows": self.count, "events_per_s": self.count / seconds, "rounds": rounds}


class AiosqliteFloor(_Floor):
    """The fsync floor: one transaction (one fsync) a row through aiosqlite, execute then commit.

    The least a durable single-row write costs through aiosqlite (two thread hops and an fsync).
    """

    _conn: aiosqlite.Connection | None = None

    async def open(self) -> None:
        """Create the schema and the rows, and connect at the store's durability."""
        await self._prepare()
        self._conn = await aiosqlite.connect(self.path)
        await self._conn.execute("PRAGMA journal_mode = WAL")
        await self._conn.execute("PRAGMA synchronous = FULL")

    async def run(self, first: int, end: int) -> None:
        """Write rows ``first`` to ``end``, a transaction each."""
        assert self._conn is not None, "open() first"
        for row in self._rows[first:end]:
            await self._conn.execute(INSERT, row)
            await self._conn.commit()

    async def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


class InThreadFloor(_Floor):
    """The raw floor: plain ``sqlite3`` in the calling thread, ``BEGIN; INSERT; COMMIT`` a row.

    What one durable row costs with no thread hop at all; it blocks the loop while it runs, so
    nothing else may be measured meanwhile.
    """

    _raw: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Create the schema and the rows, and connect at the store's durability."""
        await self._prepare()
        self._raw = sqlite3.connect(self.path, isolation_level=None)
        self._raw.execute("PRAGMA journal_mode = WAL")
        self._raw.execute("PRAGMA synchronous = FULL")

    async def run(self, first: int, end: int) -> None:
        """Write rows ``first`` to ``end``, a transaction each."""
        conn = self._raw
        assert conn is not None, "open() first"
        for row in self._rows[first:end]:
            conn.execute("BEGIN")
            conn.execute(INSERT, row)
            conn.execute("COMMIT")

    async def close(self) -> None:
        """Close the connection."""
        if self._raw is not None:
            self._raw.close()
            self._raw = None


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


def peer_installed() -> bool:
    """Whether the ``eventsourcing`` package (the bench extra) is installed."""
    return importlib.util.find_spec("eventsourcing") is not None


class Peer:
    """The ``eventsourcing`` package on its SQLite recorder, one sequential caller: load the
    aggregate, deposit, save, over ``aggregates`` accounts opened beforehand.

    Its recorder uses WAL and SQLite's default ``synchronous=FULL``: the same durability.
    """

    def __init__(self, path: Path, count: int, aggregates: int, *, cache: bool) -> None:
        self.path, self.count, self.aggregates, self.cache = path, count, aggregates, cache
        self._app: Any = None
        self._ids: list[Any] = []

    async def open(self) -> None:
        """Open the application and its accounts (untimed).

        :raises ImportError: if ``eventsourcing`` is not installed
        """
        application = importlib.import_module("eventsourcing.application")
        account_class = _peer_account_class()
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(self.path),
            "SQLITE_LOCK_TIMEOUT": "10",
        }
        if self.cache:
            env["AGGREGATE_CACHE_MAXSIZE"] = str(self.aggregates)
        self._app = application.Application(env=env)
        for _ in range(self.aggregates):
            account = account_class()
            self._app.save(account)
            self._ids.append(account.id)

    async def run(self, first: int, end: int) -> None:
        """Run commands ``first`` to ``end``."""
        app, ids, aggregates = self._app, self._ids, self.aggregates
        for i in range(first, end):
            account = app.repository.get(ids[i % aggregates])
            account.deposit(1)
            app.save(account)

    async def close(self) -> None:
        """Close the application."""
        if self._app is not None:
            self._app.close()
            self._app = None

    def result(self, seconds: float, rounds: int) -> Result:
        """What :attr:`count` commands in ``seconds`` over ``rounds`` rounds amount to."""
        return {
            "commands": self.count,
            "cache": self.cache,
            "commands_per_s": self.count / seconds,
            "rounds": rounds,
        }


#: a baseline that runs in rounds beside W1-seq (see workload_sequential_with_floor)
Rival = AiosqliteFloor | InThreadFloor | Peer


async def run_alone(rival: Rival) -> Result:
    """Run a rival over all its rows or commands at once; return its result."""
    await rival.open()
    try:
        started = time.perf_counter()
        await rival.run(0, rival.count)
        elapsed = time.perf_counter() - started
    finally:
        await rival.close()
    return rival.result(elapsed, 1)


async def baseline_fsync_floor(path: Path, count: int) -> Result:
    """The fsync floor (:class:`AiosqliteFloor`) over ``count`` rows, alone."""
    return await run_alone(AiosqliteFloor(path, count))


async def baseline_raw_floor(path: Path, count: int) -> Result:
    """The raw in-thread floor (:class:`InThreadFloor`) over ``count`` rows, alone."""
    return await run_alone(InThreadFloor(path, count))


async def baseline_peer(
    path: Path, commands: int, aggregates: int, *, cache: bool
) -> Result | None:
    """The peer (:class:`Peer`) over ``commands`` commands, alone (None: not installed)."""
    if not peer_installed():
        return None
    return await run_alone(Peer(path, commands, aggregates, cache=cache))
