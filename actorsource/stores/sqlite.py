"""The SQLite event store: embedded, zero set-up, the default.

Design (measured in ``shared/PERF_NOTES.md``):

- **Group commit.** One writer task owns the write connection. Appends and snapshot saves that
  are pending at the same moment are committed in one transaction by one call on the
  connection's thread, so a batch costs a constant number of thread hops and one fsync however
  many appends it holds. Each append runs in its own SAVEPOINT, so a conflict fails only that
  append, never the batch.
- **Known heads.** The writer remembers the head version of the streams it wrote or checked.
  When an append expects exactly that head, it inserts without a version query; the
  ``UNIQUE(stream_id, version)`` constraint stays the final guard against other processes
  (a stale head can only be too low, and then the insert collides).
- **Reads off the write path.** Reads use their own connection (a WAL reader), so activating
  actors never queues behind the writer.
- **Durability.** WAL with ``synchronous=FULL`` by default: an append is on disk when it returns.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

import aiosqlite
import attrs

from .._errors import ConcurrencyError, IncompatibleStoreError, StoreError
from .._records import AppendResult, NewEvent, SnapshotRecord, StoredEvent
from ._base import (
    StoreLifecycle,
    check_append,
    check_stream_id,
    decode_json,
    encode_json,
    encode_snapshot_state,
    utc_now,
)

logger = logging.getLogger("actorsource.stores.sqlite")

#: marks a SQLite file as an actorsource database (PRAGMA application_id; "ACSO")
APPLICATION_ID: Final = 0x4143534F
#: the schema version this code writes and reads (PRAGMA user_version)
SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events (
    position    INTEGER PRIMARY KEY,
    stream_id   TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    type        TEXT    NOT NULL,
    data        TEXT    NOT NULL,
    metadata    TEXT    NOT NULL,
    event_id    TEXT    NOT NULL UNIQUE,
    recorded_at TEXT    NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE TABLE IF NOT EXISTS snapshots (
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    state          TEXT    NOT NULL,
    recorded_at    TEXT    NOT NULL,
    PRIMARY KEY (stream_id, version)
);
"""

_INSERT_EVENT: Final = (
    "INSERT INTO events (position, stream_id, version, type, data, metadata, event_id, "
    "recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_STREAM_HEAD: Final = "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = ?"
_SAVE_SNAPSHOT: Final = (
    "INSERT OR REPLACE INTO snapshots (stream_id, version, schema_version, state, recorded_at) "
    "VALUES (?, ?, ?, ?, ?)"
)
_COLUMNS: Final = "stream_id, version, position, type, data, metadata, event_id, recorded_at"

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


@attrs.define(slots=True)
class _Append:
    stream_id: str
    expected_version: int | None
    rows: list[tuple[str, str, str, str]]  # (type, data json, metadata json, event_id)
    future: asyncio.Future[AppendResult]


@attrs.define(slots=True)
class _SaveSnapshot:
    row: tuple[str, int, int, str]  # (stream_id, version, schema_version, state json)
    future: asyncio.Future[None]


_Op = _Append | _SaveSnapshot


class SQLiteEventStore(StoreLifecycle):
    """An event store in one SQLite file (WAL, ``synchronous=FULL`` by default).

    Several runtimes and several processes may use one file at once: writes are serialized by
    SQLite's lock (waiting up to ``busy_timeout`` seconds), and every append checks its
    expected version.

    :param path: the database file; it is created with its schema on first open
    :param synchronous: SQLite's ``synchronous`` setting; ``FULL`` makes every acknowledged
        append survive power loss, ``NORMAL`` only a process crash
    :param busy_timeout: seconds to wait for another connection's write lock
    :param max_batch: the most appends one transaction takes
    :param read_page_size: rows fetched per thread hop when reading
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout: float = 10.0,
        max_batch: int = 2048,
        read_page_size: int = 2000,
        known_heads: int = 100_000,
    ) -> None:
        self.path = Path(path)
        if str(path) == ":memory:" or str(path).startswith("file::memory:"):
            msg = "SQLiteEventStore needs a file path; use InMemoryEventStore for a memory store"
            raise ValueError(msg)
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            msg = f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}"
            raise ValueError(msg)
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.max_batch = max_batch
        self.read_page_size = read_page_size
        self._known_heads_limit = known_heads
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._pending: list[_Op] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        # stream id -> head version, as last written or checked by this store's writer
        self._heads: dict[str, int] = {}
        self._time_cache: tuple[str, datetime] = ("", utc_now())
        #: number of transactions committed by the writer (a batch is one transaction)
        self.batches_committed = 0

    def __repr__(self) -> str:
        return f"SQLiteEventStore({str(self.path)!r})"

    # -- lifecycle -----------------------------------------------------------------------

    async def _open(self) -> None:
        directory = self.path.parent
        if not directory.is_dir():
            msg = f"cannot open {str(self.path)!r}: directory {str(directory)!r} does not exist"
            raise StoreError(msg)
        try:
            self._writer = await self._connect()
            await self._prepare_schema(self._writer)
            self._reader = await self._connect()
            await self._reader.execute("PRAGMA query_only = ON")
        except BaseException:
            await self._close_connections()
            raise
        self._wakeup = asyncio.Event()
        self._writer_task = asyncio.get_running_loop().create_task(
            self._write_loop(), name=f"actorsource writer {self.path}"
        )

    async def _connect(self) -> aiosqlite.Connection:
        try:
            conn = await aiosqlite.connect(
                self.path, isolation_level=None, timeout=self.busy_timeout
            )
        except sqlite3.Error as exc:
            msg = f"cannot open {str(self.path)!r}: {exc}"
            raise StoreError(msg) from exc
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            mode = await conn.execute_fetchall("PRAGMA journal_mode = WAL")
            if next(iter(mode))[0].lower() != "wal":
                msg = f"cannot switch {str(self.path)!r} to WAL mode (got {mode})"
                raise StoreError(msg)
            await conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        except sqlite3.DatabaseError as exc:
            await conn.close()
            msg = f"{str(self.path)!r} is not an actorsource database (not SQLite: {exc})"
            raise IncompatibleStoreError(msg) from exc
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _prepare_schema(self, conn: aiosqlite.Connection) -> None:
        try:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                app_id = await _scalar(conn, "PRAGMA application_id")
                version = await _scalar(conn, "PRAGMA user_version")
                tables = [
                    row[0]
                    for row in await conn.execute_fetchall(
                        "SELECT name FROM sqlite_master WHERE type = 'table'"
                    )
                ]
                if app_id != APPLICATION_ID and tables:
                    msg = (
                        f"{str(self.path)!r} is not an actorsource database: it holds tables "
                        f"{', '.join(sorted(tables))} and no actorsource mark; refusing to touch it"
                    )
                    raise IncompatibleStoreError(msg)
                if version > SCHEMA_VERSION:
                    msg = (
                        f"{str(self.path)!r} has actorsource schema version {version}, newer "
                        f"than this version of actorsource reads ({SCHEMA_VERSION}); upgrade "
                        "actorsource"
                    )
                    raise IncompatibleStoreError(msg)
                if app_id != APPLICATION_ID or version < SCHEMA_VERSION:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            await conn.execute(statement)
                    await conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    await conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                await conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            msg = f"{str(self.path)!r} is not an actorsource database ({exc})"
            raise IncompatibleStoreError(msg) from exc

    async def _close(self) -> None:
        self._closing = True
        self._wakeup.set()
        if self._writer_task is not None:
            await asyncio.shield(self._writer_task)
        await self._close_connections()

    async def _close_connections(self) -> None:
        for conn in (self._writer, self._reader):
            if conn is not None:
                await conn.close()
        self._writer = self._reader = None

    # -- writing ---------------------------------------------------------------------------

    async def append(
        self, stream_id: str, expected_version: int | None, events: Sequence[NewEvent]
    ) -> AppendResult:
        """Append events atomically, durable when this returns (see :class:`EventStore`)."""
        self._check_open()
        check_append(stream_id, expected_version, events)
        rows = [
            (e.type, encode_json(e.data, "data", e), encode_json(e.metadata, "metadata", e), e.event_id)
            for e in events
        ]
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._pending.append(_Append(stream_id, expected_version, rows, future))
        self._wakeup.set()
        return await future

    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        """Save a snapshot in the writer's next transaction (see :class:`EventStore`)."""
        self._check_open()
        check_stream_id(snapshot.stream_id)
        row = (
            snapshot.stream_id,
            snapshot.version,
            snapshot.schema_version,
            encode_snapshot_state(snapshot),
        )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_SaveSnapshot(row, future))
        self._wakeup.set()
        await future

    async def _write_loop(self) -> None:
        assert self._writer is not None
        conn = self._writer
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                await self._commit(conn, batch)
            if self._closing and not self._pending:
                return

    async def _commit(self, conn: aiosqlite.Connection, batch: list[_Op]) -> None:
        now = utc_now()
        now_text = now.isoformat()
        try:
            # one hop to the connection's thread for the whole batch (see the module docstring);
            # aiosqlite has no public call for running a function on its thread
            results, heads = await conn._execute(  # noqa: SLF001
                _commit_batch, conn._conn, batch, self._heads, now, now_text  # noqa: SLF001
            )
        except Exception as exc:
            error = StoreError(
                f"SQLite failed to commit {len(batch)} write(s) to {str(self.path)!r}: {exc}; "
                "nothing of them was stored"
            )
            error.__cause__ = exc
            logger.error(
                "batch commit failed",
                extra={"path": str(self.path), "writes": len(batch), "error": str(exc)},
            )
            for op in batch:
                if not op.future.done():
                    op.future.set_exception(error)
            # what we believed about stream heads may be wrong now
            self._heads.clear()
            return
        self.batches_committed += 1
        self._remember_heads(heads)
        for op, result in zip(batch, results, strict=True):
            if op.future.done():  # the caller was cancelled; the write stands regardless
                continue
            if isinstance(result, BaseException):
                op.future.set_exception(result)
            else:
                op.future.set_result(result)  # type: ignore[arg-type]

    def _remember_heads(self, heads: dict[str, int]) -> None:
        known = self._heads
        for stream_id, version in heads.items():
            known.pop(stream_id, None)
            known[stream_id] = version
        excess = len(known) - self._known_heads_limit
        if excess > 0:
            for stream_id in list(known)[:excess]:
                del known[stream_id]

    # -- reading ---------------------------------------------------------------------------

    async def read_stream(
        self, stream_id: str, from_version: int = 1, to_version: int | None = None
    ) -> AsyncIterator[StoredEvent]:
        """Yield a stream's events in version order (see :class:`EventStore`)."""
        check_stream_id(stream_id)
        last = to_version if to_version is not None else 2**62
        version = max(from_version, 1)
        page_size = self.read_page_size
        while version <= last:
            rows = await self._fetch(
                f"SELECT {_COLUMNS} FROM events WHERE stream_id = ? AND version >= ? "
                "AND version <= ? ORDER BY version LIMIT ?",
                (stream_id, version, last, page_size),
            )
            for row in rows:
                yield self._stored(row)
            if len(rows) < page_size:
                return
            version = rows[-1][1] + 1

    async def read_all(self, from_position: int = 1) -> AsyncIterator[StoredEvent]:
        """Yield every event in global (commit) order (see :class:`EventStore`)."""
        position = max(from_position, 1)
        page_size = self.read_page_size
        while True:
            rows = await self._fetch(
                f"SELECT {_COLUMNS} FROM events WHERE position >= ? ORDER BY position LIMIT ?",
                (position, page_size),
            )
            for row in rows:
                yield self._stored(row)
            if len(rows) < page_size:
                return
            position = rows[-1][2] + 1

    async def stream_version(self, stream_id: str) -> int:
        """Return the version of a stream's last event (see :class:`EventStore`)."""
        rows = await self._fetch(_STREAM_HEAD, (check_stream_id(stream_id),))
        return int(rows[0][0])

    async def load_snapshot(
        self, stream_id: str, max_version: int | None = None
    ) -> SnapshotRecord | None:
        """Return the latest snapshot at or before ``max_version`` (see :class:`EventStore`)."""
        rows = await self._fetch(
            "SELECT version, schema_version, state, recorded_at FROM snapshots "
            "WHERE stream_id = ? AND version <= ? ORDER BY version DESC LIMIT 1",
            (check_stream_id(stream_id), max_version if max_version is not None else 2**62),
        )
        if not rows:
            return None
        version, schema_version, state, recorded_at = rows[0]
        return SnapshotRecord(
            stream_id, version, decode_json(state), schema_version, self._time(recorded_at)
        )

    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        self._check_open()
        assert self._reader is not None
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            msg = f"reading {str(self.path)!r} failed: {exc}"
            raise StoreError(msg) from exc

    def _stored(self, row: Any) -> StoredEvent:
        return StoredEvent(
            row[0],
            row[1],
            row[2],
            row[3],
            decode_json(row[4]),
            decode_json(row[5]),
            row[6],
            self._time(row[7]),
        )

    def _time(self, text: str) -> datetime:
        # events of one batch share one commit time: parse each distinct text once
        cached_text, cached = self._time_cache
        if text != cached_text:
            cached = datetime.fromisoformat(text)
            self._time_cache = (text, cached)
        return cached


async def _scalar(conn: aiosqlite.Connection, sql: str) -> int:
    rows = list(await conn.execute_fetchall(sql))
    return int(rows[0][0])


def _commit_batch(
    conn: sqlite3.Connection,
    batch: list[_Op],
    known_heads: dict[str, int],
    now: datetime,
    now_text: str,
) -> tuple[list[AppendResult | BaseException | None], dict[str, int]]:
    """Commit a batch in one transaction, on the connection's thread.

    Returns one result per op (an AppendResult, an error for that op alone, or None for a
    snapshot) and the stream heads the batch learned. Raises if the transaction fails as a
    whole; then nothing of the batch is stored.
    """
    results: list[AppendResult | BaseException | None] = []
    heads: dict[str, int] = {}
    conn.execute("BEGIN IMMEDIATE")
    try:
        next_position = conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[
            0
        ] + 1
        for op in batch:
            if isinstance(op, _SaveSnapshot):
                conn.execute(_SAVE_SNAPSHOT, (*op.row, now_text))
                results.append(None)
                continue
            stream_id, expected = op.stream_id, op.expected_version
            head = heads.get(stream_id)
            if head is None:
                head = known_heads.get(stream_id)
            if expected is None or head != expected:
                head = conn.execute(_STREAM_HEAD, (stream_id,)).fetchone()[0]
                heads[stream_id] = head
                if expected is not None and head != expected:
                    results.append(ConcurrencyError(stream_id, expected, head))
                    continue
            rows = [
                (next_position + i, stream_id, head + i + 1, kind, data, meta, event_id, now_text)
                for i, (kind, data, meta, event_id) in enumerate(op.rows)
            ]
            conn.execute("SAVEPOINT append")
            try:
                conn.executemany(_INSERT_EVENT, rows)
            except sqlite3.IntegrityError as exc:
                conn.execute("ROLLBACK TO append")
                conn.execute("RELEASE append")
                actual = conn.execute(_STREAM_HEAD, (stream_id,)).fetchone()[0]
                heads[stream_id] = actual
                if actual != head:  # another process appended since we last looked
                    results.append(ConcurrencyError(stream_id, head, actual))
                else:
                    msg = f"appending to {stream_id!r} failed: {exc} (an event id already stored?)"
                    error = StoreError(msg)
                    error.__cause__ = exc
                    results.append(error)
                continue
            conn.execute("RELEASE append")
            count = len(rows)
            heads[stream_id] = head + count
            results.append(AppendResult(head + count, next_position, now))
            next_position += count
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return results, heads
