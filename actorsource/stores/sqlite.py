"""The SQLite event store: embedded, zero set-up, the default.

Design (measured in ``shared/PERF_NOTES.md``):

- **Group commit.** One writer owns the write connection. Appends and snapshot saves that are
  pending at the same moment are committed in one transaction by one call on the connection's
  thread, so a batch costs a constant number of thread hops and one fsync however many appends
  it holds. The writer is callback-driven, not a task: a batch goes straight onto the thread's
  queue, and the thread calls back on the loop when it is done (two task switches fewer per
  batch, which a sequential caller feels). Under load the thread takes the writes queued during
  its commit itself, as the next batch, so only an idle writer is handed a batch by the loop
  (a handover costs a wait for the GIL: see :meth:`SQLiteEventStore._write_on_thread`).
  A conflict fails only its append, never the batch:
  rows go in with few multi-row statements, and when a constraint refuses one, its appends are
  redone one at a time (each in a savepoint when it has several rows) to find the one at fault.
- **Known heads.** The writer remembers the head version of the streams it wrote or checked.
  When an append expects exactly that head, it inserts without a version query; the
  ``UNIQUE(stream_id, version)`` constraint stays the final guard against other processes
  (a stale head can only be too low, and then the insert collides). A batch whose appends all
  expect known heads is one autocommit INSERT statement: one release of the GIL and one fsync
  for the whole batch (see :class:`_BatchCommit`).
- **Reads off the write path.** Reads use their own connection (a WAL reader), so activating
  actors never queues behind the writer. Activation loads coalesce like appends: the loads
  waiting at one moment go to the reader's thread as one job.
- **Durability.** WAL with ``synchronous=FULL`` by default: an append is on disk when it returns.
- **Gap-free positions in commit order.** The writer gives positions (``max + 1``) inside its
  write transaction, which SQLite serializes across connections and processes: a transaction
  that takes position 10 starts after the one holding 9 committed, and a rolled-back append
  takes none. So a reader never sees position 10 before 9, and never a hole.
- **Idempotent appends.** An append whose events are already stored, by id, at the versions it
  would give them is the same append committed before (a retry after a lost reply): it returns
  that append's result. Only the failure paths (a version conflict, a constraint violation) look
  for it, so an ordinary append pays nothing.
- **Read models in the same file.** Exactly-once and inline projections run their handlers on
  the writer's thread, inside the writer's transaction (see :meth:`commit_with_checkpoint` and
  :meth:`add_inline_projection`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from queue import SimpleQueue
from typing import Any, Final, Literal, cast

import attrs

from .._errors import (
    ActorsourceError,
    CheckpointConflictError,
    ConcurrencyError,
    IncompatibleStoreError,
    StoreError,
)
from .._records import (
    AppendResult,
    JSONDict,
    NewEvent,
    SnapshotRecord,
    StoredEvent,
    StreamInfo,
)
from ._base import (
    MAX_VERSION,
    HeadWatch,
    InlineHook,
    KnownHeads,
    Latest,
    StoreCapabilities,
    StoreLifecycle,
    T,
    TransactionWork,
    check_append,
    check_checkpoint,
    check_command_ids,
    check_filters,
    check_snapshot,
    check_stream_id,
    check_time,
    decode_json,
    encode_json,
    encode_snapshot_state,
    event_data,
    event_data_of,
    prior_append,
    retry_start,
    snapshot_record,
    stored_event,
    utc_now,
)
from ._thread import ConnectionThread, Job

logger = logging.getLogger("actorsource.stores.sqlite")

#: marks a SQLite file as an actorsource database (PRAGMA application_id; "ACSO")
APPLICATION_ID: Final = 0x4143534F
#: the schema version this code writes and reads (PRAGMA user_version); version 2 added the
#: checkpoints table (a version 1 file is upgraded in place when opened)
SCHEMA_VERSION: Final = 2

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
CREATE TABLE IF NOT EXISTS checkpoints (
    name        TEXT    PRIMARY KEY,
    position    INTEGER NOT NULL,
    updated_at  TEXT    NOT NULL
);
"""

_INSERT_EVENT: Final = (
    "INSERT INTO events (position, stream_id, version, type, data, metadata, event_id, "
    "recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_STREAM_HEAD: Final = "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = ?"
_STREAM_HEAD_AT: Final = (
    "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = ? AND recorded_at <= ?"
)
_SAVE_SNAPSHOT: Final = (
    "INSERT OR REPLACE INTO snapshots (stream_id, version, schema_version, state, recorded_at) "
    "VALUES (?, ?, ?, ?, ?)"
)
_COLUMNS: Final = "stream_id, version, position, type, data, metadata, event_id, recorded_at"
_SAVE_CHECKPOINT: Final = (
    "INSERT INTO checkpoints (name, position, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET position = excluded.position, "
    "updated_at = excluded.updated_at"
)

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]

#: activation loads one job on the reader's thread takes at most (later ones wait for the next)
_LOADS_PER_JOB: Final = 256

#: command ids per lookup query (SQLite binds at most 32,766 parameters, older builds 999)
_IDS_PER_LOOKUP: Final = 500


@attrs.define(slots=True)
class _Append:
    stream_id: str
    expected_version: int | None
    rows: list[tuple[str, str, str, str]]  # (type, data json, metadata json, event_id)
    #: resolved at commit, unless the appender gave ``on_done``
    future: asyncio.Future[AppendResult] | None
    #: called at commit with the result or the error (``append_then``), instead of a future
    on_done: Callable[[AppendResult | BaseException], None] | None = None


@attrs.define(slots=True)
class _SaveSnapshot:
    row: tuple[str, int, int, str]  # (stream_id, version, schema_version, state json)
    future: asyncio.Future[None]


@attrs.define(slots=True)
class _Transact:
    """Read-model work and a checkpoint, committed together (or neither)."""

    name: str
    position: int
    work: TransactionWork[Any] | None  # None: only save the checkpoint
    future: asyncio.Future[Any]
    expected: int | None = None  # where the checkpoint must stand (None: anywhere)


@attrs.define(slots=True)
class _CatchUpInline:
    """Feed a newly added inline projection every event after its checkpoint."""

    name: str
    hook: InlineHook
    future: asyncio.Future[Any]


_Op = _Append | _SaveSnapshot | _Transact | _CatchUpInline

#: what load_latest returns: the latest snapshot, the first page of (version, type, data) after
#: it, and whether that page is all
_OnLoaded = Callable[[Latest | BaseException], None]


class _Burst:
    """The context :meth:`SQLiteEventStore.burst` returns (one per store, re-entered)."""

    __slots__ = ("_store",)

    def __init__(self, store: SQLiteEventStore) -> None:
        self._store = store

    def __enter__(self) -> None:
        self._store._bursts += 1

    def __exit__(self, *exc_info: object) -> None:
        store = self._store
        store._bursts -= 1
        if not store._bursts:
            store._burst_ended()


def _answer_op(op: _Op, outcome: Any) -> None:
    """Tell a write's caller its outcome (an exception is its error), unless it gave up.

    A callback (``append_then``) must not raise: what it raises is logged, and the other
    writers of the batch still hear back.
    """
    if type(op) is _Append and op.on_done is not None:
        on_done, op.on_done = op.on_done, None  # at most once
        try:
            on_done(outcome)
        except Exception:
            logger.exception("an append's callback failed", extra={"stream_id": op.stream_id})
        return
    future = op.future
    if future is None or future.done():  # the caller was cancelled; the write stands regardless
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


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
    :param known_heads: how many stream heads the writer remembers (to skip version queries)
    :param cache_kib: SQLite page cache per connection, in KiB
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
        cache_kib: int = 65_536,
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
        self.cache_kib = cache_kib
        self._writer: ConnectionThread | None = None
        self._reader: ConnectionThread | None = None
        #: held while the writer's thread owns a batch (taken on the loop to hand one over,
        #: released on the thread when it finds nothing more queued: see _write_on_thread)
        self._busy = threading.Lock()
        #: set whenever the writer has nothing pending or committing (close waits for it)
        self._drained = asyncio.Event()
        self._start_scheduled = False
        #: bursts under way (see burst()): writes wait for the last one to end
        self._bursts = 0
        self._burst = _Burst(self)
        #: writes not yet taken into a batch: appended on the loop, taken (popleft) by whoever
        #: holds _busy, the loop or the writer's thread (both deque calls are atomic)
        self._queued: deque[_Op] = deque()
        #: batches taken (by the holder of _busy) and answered (on the loop): close waits for
        #: the answers, which reach the loop after the thread let go of _busy
        self._batches_taken = 0
        self._batches_answered = 0
        self._closing = False
        # stream id -> head version, as last written or checked by this store's writer
        self._heads = KnownHeads(known_heads)
        self._time_cache: tuple[str, datetime] = ("", utc_now())
        #: number of transactions committed by the writer (a batch is one transaction)
        self.batches_committed = 0
        self._watch = HeadWatch()
        self._inline: dict[str, InlineHook] = {}
        # when the oldest pending write was queued, and when the batch in commit was
        self._pending_since: float | None = None
        self._committing_since: float | None = None
        #: activation loads waiting for the reader (see _start_loads), and whether one runs
        self._loads: list[tuple[str, _OnLoaded]] = []
        self._loading = False

    def __repr__(self) -> str:
        return f"SQLiteEventStore({str(self.path)!r})"

    # -- lifecycle -----------------------------------------------------------------------

    async def _open(self) -> None:
        directory = self.path.parent
        if not directory.is_dir():
            msg = f"cannot open {str(self.path)!r}: directory {str(directory)!r} does not exist"
            raise StoreError(msg)
        try:
            try:
                self._writer = await self._connect("writer")
                await self._prepare(self._writer)
                self._reader = await self._connect("reader")
                await self._reader.execute("PRAGMA query_only = ON")
            except sqlite3.Error as exc:
                raise self._open_error(exc) from exc
        except BaseException:
            await self._close_connections()
            raise
        self._drained = asyncio.Event()
        self._drained.set()

    async def _connect(self, role: str) -> ConnectionThread:
        conn = await ConnectionThread.connect(
            self.path, busy_timeout=self.busy_timeout, name=f"actorsource-sqlite-{role}"
        )
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            # SQLite's default page cache is 2 MiB: the event-id index of a few hundred thousand
            # events outgrows it and every insert then reads index pages back from the OS
            await conn.execute(f"PRAGMA cache_size = {-self.cache_kib}")
        except BaseException:
            await conn.close()
            raise
        return conn

    def _open_error(self, exc: sqlite3.Error) -> StoreError:
        code = getattr(exc, "sqlite_errorcode", None)
        if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
            msg = (
                f"{str(self.path)!r} is not an actorsource database (not a SQLite database: "
                f"{exc}); refusing to touch it"
            )
            return IncompatibleStoreError(msg)
        # anything else (locked, read-only, no space, ...) is a failure to open, not a verdict
        # about what the file is
        msg = f"cannot open {str(self.path)!r}: {exc}"
        return StoreError(msg)

    async def _prepare(self, conn: ConnectionThread) -> None:
        # look before changing anything: the journal mode is written into the file's header, so
        # switching a foreign database to WAL would already alter it
        # (one read transaction, so that a schema another opener commits meanwhile is seen
        # whole or not at all)
        await conn.execute("BEGIN")
        try:
            needs_schema = await self._check_identity(conn)
        finally:
            if conn.in_transaction:
                await conn.execute("COMMIT")
        await self._switch_to_wal(conn)
        await conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        if not needs_schema:
            return
        await conn.execute("BEGIN IMMEDIATE")
        try:
            # again under the write lock: another process may have created the schema meanwhile
            if await self._check_identity(conn):
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

    async def _switch_to_wal(self, conn: ConnectionThread) -> None:
        # switching takes an exclusive lock, and when openers of a new file race for it SQLite
        # answers "database is locked" at once instead of waiting busy_timeout (it would
        # deadlock); so wait here, up to busy_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.busy_timeout
        delay = 0.001
        while True:
            try:
                mode = await conn.execute_fetchall("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError as exc:
                busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or loop.time() >= deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        if next(iter(mode))[0].lower() != "wal":
            msg = f"cannot switch {str(self.path)!r} to WAL mode (got {list(mode)})"
            raise StoreError(msg)

    async def _check_identity(self, conn: ConnectionThread) -> bool:
        """Return whether the file needs the schema; raise if it is not ours to touch."""
        app_id = await _scalar(conn, "PRAGMA application_id")
        version = await _scalar(conn, "PRAGMA user_version")
        if app_id not in (0, APPLICATION_ID):
            msg = (
                f"{str(self.path)!r} is not an actorsource database: it is marked as another "
                f"application's (application_id {app_id:#x}); refusing to touch it"
            )
            raise IncompatibleStoreError(msg)
        if app_id == 0:
            tables = [
                row[0]
                for row in await conn.execute_fetchall(
                    "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
                )
            ]
            if tables:
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
        return app_id != APPLICATION_ID or version < SCHEMA_VERSION

    async def _close(self) -> None:
        self._closing = True
        # every write queued before close() is committed first (cancelling close() does not
        # cancel them: they are not tasks)
        while (
            self._busy.locked()
            or self._queued
            or self._start_scheduled
            or self._batches_taken != self._batches_answered
        ) and self._writer_alive():
            self._drained.clear()
            await self._drained.wait()
        self._fail_pending("closed before this write")
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
        return await self.submit_append(stream_id, expected_version, events)

    def submit_append(
        self, stream_id: str, expected_version: int | None, events: Sequence[NewEvent]
    ) -> asyncio.Future[AppendResult]:
        """Queue an append for the writer's next transaction; the future resolves at commit.

        No coroutine per append. Bad arguments raise here, at once.
        """
        rows = self._rows(stream_id, expected_version, events)
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._enqueue(_Append(stream_id, expected_version, rows, future))
        return future

    def append_then(
        self,
        stream_id: str,
        expected_version: int | None,
        events: Sequence[NewEvent],
        on_done: Callable[[AppendResult | BaseException], None],
    ) -> None:
        """Queue an append; once its batch is committed (or failed), call ``on_done`` on the
        loop with the result, or the error for this append.

        The runtime's path: no future, and the commit calls the actor back in the same loop
        step. ``on_done`` must not raise (what it raises is logged). Bad arguments raise here,
        at once.
        """
        rows = self._rows(stream_id, expected_version, events)
        self._enqueue(_Append(stream_id, expected_version, rows, None, on_done))

    def _rows(
        self, stream_id: str, expected_version: int | None, events: Sequence[NewEvent]
    ) -> list[tuple[str, str, str, str]]:
        """Check an append and encode its events as (type, data, metadata, event id) rows."""
        self._check_open()
        check_append(stream_id, expected_version, events)
        return [
            (
                e.type,
                encode_json(e.data, "data", e),
                encode_json(e.metadata, "metadata", e),
                e.event_id,
            )
            for e in events
        ]

    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        """Save a snapshot in the writer's next transaction (see :class:`EventStore`)."""
        self._check_open()
        check_snapshot(snapshot)
        row = (
            snapshot.stream_id,
            snapshot.version,
            snapshot.schema_version,
            encode_snapshot_state(snapshot),
        )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(_SaveSnapshot(row, future))
        await future

    def _writer_alive(self) -> bool:
        # a flag, not the thread itself: asking it costs a lock per call, too much per append
        conn = self._writer
        return conn is not None and conn.alive

    def _enqueue(self, op: _Op) -> None:
        if not self._writer_alive():
            # nobody would ever answer the write
            msg = f"{self!r} cannot write: its writer thread has stopped; make a new store"
            raise StoreError(msg)
        if not self._queued:
            self._pending_since = time.monotonic()
        self._queued.append(op)
        # a busy writer's thread takes what is queued when its batch is done
        if not self._busy.locked() and not self._start_scheduled and not self._bursts:
            # on the next loop step, so that every write of a burst (all the appends this
            # step's callbacks make) goes into one transaction
            self._start_scheduled = True
            self._drained.clear()
            asyncio.get_running_loop().call_soon(self._start_batch)

    def capabilities(self) -> StoreCapabilities:
        """Callback appends and loads, bursts, lean replays, and the writer's lag."""
        return StoreCapabilities(
            append_then=self.append_then,
            submit_append=self.submit_append,
            load_latest=self.load_latest,
            load_latest_then=self.load_latest_then,
            read_stream_data=self.read_stream_data,
            burst=self.burst,
            writer_lag=self.writer_lag,
        )

    def burst(self) -> _Burst:
        """A context for a burst of writes: they wait for its end, then go to the writer at
        once if it is idle (not on the next loop step).

        For a caller that knows when its burst is complete: the runtime wraps its draining of
        the ready actors in one, so that a sequential caller waits one loop step less and a
        crowd of actors still shares a batch. Bursts nest.
        """
        return self._burst

    def _burst_ended(self) -> None:
        if self._queued and not self._busy.locked() and self._writer_alive():
            self._start_batch()

    def writer_lag(self) -> float:
        """Return how long (s) the oldest write not yet committed has waited (0: none waits).

        A health check's view of the writer: a lag that keeps growing means it is stuck (a
        lock held by another process, a hung disk).

        :raises StoreError: if the store is not open or its writer thread has stopped
        """
        self._check_open()
        if not self._writer_alive():
            msg = f"{self!r}: its writer thread has stopped"
            raise StoreError(msg)
        since = [t for t in (self._pending_since, self._committing_since) if t is not None]
        return time.monotonic() - min(since) if since else 0.0

    def _start_batch(self) -> None:
        """Hand the queued writes (up to ``max_batch``) to an idle writer's thread as one batch.

        No writer task: the batch goes straight onto the connection's thread queue, and the
        thread calls :meth:`_batch_done` back on the loop when the transaction is over. That
        saves two task switches per batch, a visible share of one sequential append. A busy
        thread needs no start: it takes the next batch itself (see :meth:`_write_on_thread`).
        """
        self._start_scheduled = False
        conn = self._writer
        if conn is None or not self._queued:
            if not self._busy.locked():
                self._drained.set()
            return
        if not self._busy.acquire(blocking=False):
            return  # the thread is busy: it takes what is queued when its batch is done
        batch = self._take()
        self._drained.clear()
        work = functools.partial(
            self._write_on_thread, conn.connection, conn.jobs, asyncio.get_running_loop(), batch
        )
        # one hop to the connection's thread (see the module docstring), no future or task
        conn.submit(work)

    def _take(self) -> list[_Op]:
        """Take up to ``max_batch`` queued writes (only the holder of ``_busy`` calls this)."""
        queued = self._queued
        # the loop only appends meanwhile, so this many are there to take
        batch = [queued.popleft() for _ in range(min(len(queued), self.max_batch))]
        if batch:
            self._batches_taken += 1
        self._committing_since = self._pending_since
        self._pending_since = time.monotonic() if queued else None
        return batch

    def _write_on_thread(
        self,
        conn: sqlite3.Connection,
        tx: SimpleQueue[Job],
        loop: asyncio.AbstractEventLoop,
        batch: list[_Op],
    ) -> None:
        """Commit batches on the writer's thread, while writes are queued; hold ``_busy``.

        When a batch is done, the thread takes the next one itself (the writes queued while it
        committed) before it hands the outcome to the loop, and lets go of ``_busy`` only when
        nothing is queued (or another call waits for the connection's thread). Why: a batch
        handed over by the loop waited for the GIL before it could start, since the thread
        wakes while the loop runs Python; measured in W1 (issue #3), 5 ms on average at
        CPython's default switch interval and 15 ms at the 90th percentile (behind garbage
        collections), a third of a batch's cycle. At the end of its commit the thread holds the
        GIL anyway. Stream heads are remembered here, before the next batch relies on them.
        """
        while True:
            now = utc_now()
            # after the take: a projection's catch-up in this batch has its hook here
            inline = dict(self._inline) if self._inline else None
            outcome: Any
            try:
                outcome = _commit_batch(
                    conn, batch, self._heads, now, now.isoformat(), inline=inline
                )
                self._heads.remember(outcome[1])
            except BaseException as exc:  # reported on the loop, where callers wait
                outcome = exc
                self._heads.clear()  # what we believed about stream heads may be wrong now
            following: list[_Op] = []
            if tx.empty():  # nothing else waits for the connection's thread
                following = self._take()
                if not following:
                    self._committing_since = None
                    self._busy.release()
                    # a write queued after the take, while the loop still saw this thread
                    # busy (so it started nothing): take it, unless the loop already has
                    if self._queued and self._busy.acquire(blocking=False):
                        following = self._take()
                        if not following:
                            self._busy.release()
            else:
                self._committing_since = None
                self._busy.release()
            try:
                loop.call_soon_threadsafe(self._batch_done, batch, outcome)
            except RuntimeError:  # a closed loop: nobody waits any more
                if following:
                    self._busy.release()
                return
            if not following:
                return
            batch = following

    def _batch_done(self, batch: list[_Op], outcome: Any) -> None:
        """Answer a batch's writers (on the loop), then start the next batch with what they
        and the others wrote meanwhile, unless the writer's thread already has."""
        self._batches_answered += 1
        self._bursts += 1  # the writes the answers make are started below
        try:
            self._answer(batch, outcome)
        finally:
            self._bursts -= 1
            if self._busy.locked():
                pass  # the thread commits the next batch and calls back again
            elif self._queued and self._writer_alive():
                self._start_batch()
            else:
                self._drained.set()

    def _answer(self, batch: list[_Op], outcome: Any) -> None:
        if isinstance(outcome, BaseException):
            exc = outcome
            logger.error(
                "batch commit failed",
                extra={"path": str(self.path), "writes": len(batch), "error": str(exc)},
            )
            msg = (
                f"SQLite failed to commit {len(batch)} write(s) to {str(self.path)!r}: {exc}; "
                "nothing of them was stored"
            )
            for op in batch:
                # one error object per caller: a shared one would collect every caller's
                # traceback
                error = StoreError(msg)
                error.__cause__ = exc
                _answer_op(op, error)
            return
        results, _, head_position = outcome
        self.batches_committed += 1
        for op, result in zip(batch, results, strict=True):
            _answer_op(op, result)
        self._watch.advance(head_position)

    def _fail_pending(self, reason: str) -> None:
        pending = list(self._queued)
        self._queued.clear()
        for op in pending:
            _answer_op(op, StoreError(f"{self!r} {reason}; nothing of it was stored"))

    # -- reading ---------------------------------------------------------------------------

    async def read_stream(
        self,
        stream_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> AsyncIterator[StoredEvent]:
        """Yield a stream's events in version order (see :class:`EventStore`)."""
        check_stream_id(stream_id)
        time_sql, time_params = _time_range(since, until)
        # clamped: SQLite cannot bind ints beyond 64 bits
        last = MAX_VERSION if to_version is None else min(to_version, MAX_VERSION)
        version = max(from_version, 1)
        if version > last:
            return
        sql = (
            f"SELECT {_COLUMNS} FROM events WHERE stream_id = ? AND version >= ? "
            f"AND version <= ?{time_sql} ORDER BY version LIMIT ?"
        )
        async for event in self._read_pages(
            sql, (stream_id,), version, (last, *time_params), key=1
        ):
            yield event

    async def read_all(
        self,
        from_position: int = 1,
        *,
        to_position: int | None = None,
        types: Collection[str] | None = None,
        categories: Collection[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> AsyncIterator[StoredEvent]:
        """Yield the store's events in global (commit) order (see :class:`EventStore`)."""
        type_names, prefixes = check_filters(types, categories)
        time_sql, times = _time_range(since, until)
        params: tuple[Any, ...] = times
        position = max(from_position, 1)
        last = MAX_VERSION if to_position is None else min(to_position, MAX_VERSION)
        if position > last:
            return
        where = f"position >= ? AND position <= ?{time_sql}"
        if type_names is not None:
            if not type_names:
                return
            where += f" AND type IN ({', '.join('?' * len(type_names))})"
            params = (*params, *sorted(type_names))
        if prefixes is not None:
            if not prefixes:
                return
            where += " AND (" + " OR ".join("substr(stream_id, 1, ?) = ?" for _ in prefixes) + ")"
            params = (*params, *(item for p in prefixes for item in (len(p), p)))
        sql = f"SELECT {_COLUMNS} FROM events WHERE {where} ORDER BY position LIMIT ?"
        async for event in self._read_pages(sql, (), position, (last, *params), key=2):
            yield event

    async def read_stream_data(
        self, stream_id: str, from_version: int = 1
    ) -> AsyncIterator[tuple[int, str, JSONDict]]:
        """Yield ``(version, type, data)`` of a stream's events: what replaying needs, no more.

        The runtime's fast path for loading actors: three columns instead of eight, and no
        metadata or timestamps to decode.
        """
        check_stream_id(stream_id)
        version = max(from_version, 1)
        if version > MAX_VERSION:
            return
        sql = (
            "SELECT version, type, data, position FROM events WHERE stream_id = ? "
            "AND version >= ? ORDER BY version LIMIT ?"
        )
        async for row in self._pages(sql, (stream_id,), version, (), key=0):
            yield row[0], row[1], event_data_of(stream_id, row)

    async def _read_pages(
        self, sql: str, head: tuple[Any, ...], start: int, tail: tuple[Any, ...], *, key: int
    ) -> AsyncIterator[StoredEvent]:
        async for row in self._pages(sql, head, start, tail, key=key):
            yield self._stored(row)

    async def _pages(
        self, sql: str, head: tuple[Any, ...], start: int, tail: tuple[Any, ...], *, key: int
    ) -> AsyncIterator[Any]:
        """Yield the rows of a paged query, fetching the next page while this one is consumed.

        The reader thread runs SQLite (without the GIL) while the event loop decodes: a long
        replay costs about the larger of the two, not their sum. ``key`` is the column that
        orders the pages; the next page starts after the last row's value.
        """
        page_size = self.read_page_size
        pending: asyncio.Future[list[Any]] | None = asyncio.ensure_future(
            self._fetch(sql, (*head, start, *tail, page_size))
        )
        try:
            while pending is not None:
                rows = await pending
                pending = None
                if len(rows) == page_size and rows[-1][key] < MAX_VERSION:
                    following = (*head, rows[-1][key] + 1, *tail, page_size)
                    pending = asyncio.ensure_future(self._fetch(sql, following))
                for row in rows:
                    yield row
        finally:
            if pending is not None:
                pending.cancel()

    async def find_command_events(
        self, stream_id: str, command_ids: Collection[str]
    ) -> list[StoredEvent]:
        """Return the events that commands with these ids produced (see :class:`EventStore`).

        Reads the stream's rows through the ``UNIQUE(stream_id, version)`` index and compares
        each row's ``json_extract(metadata, '$.command_id')``: no index of its own, so that
        appends (which all store a command id) pay nothing for it. The price is a scan of the
        whole stream per call (reading each row dominates; about 1.4 µs per event measured).
        """
        check_stream_id(stream_id)
        ids = check_command_ids(command_ids)
        found: list[StoredEvent] = []
        for start in range(0, len(ids), _IDS_PER_LOOKUP):
            chunk = ids[start : start + _IDS_PER_LOOKUP]
            sql = (
                f"SELECT {_COLUMNS} FROM events WHERE stream_id = ? AND "
                f"json_extract(metadata, '$.command_id') IN ({', '.join('?' * len(chunk))}) "
                "ORDER BY version"
            )
            try:
                rows = await self._fetch(sql, (stream_id, *chunk))
            except StoreError:
                # json_extract fails the whole statement on a damaged row, naming none: read
                # the stream, which raises a CodecError naming it (if that is what failed)
                async for _ in self.read_stream(stream_id):
                    pass
                raise
            found.extend(self._stored(row) for row in rows)
        if len(ids) > _IDS_PER_LOOKUP:
            found.sort(key=lambda stored: stored.version)
        return found

    async def stream_version(self, stream_id: str, *, at: datetime | None = None) -> int:
        """Return the version of a stream's last event (see :class:`EventStore`)."""
        check_stream_id(stream_id)
        moment = check_time("at", at)
        if moment is None:
            rows = await self._fetch(_STREAM_HEAD, (stream_id,))
        else:
            rows = await self._fetch(_STREAM_HEAD_AT, (stream_id, moment.isoformat()))
        return int(rows[0][0])

    async def list_streams(self, category: str | None = None) -> list[StreamInfo]:
        """Return the streams with their versions (see :class:`EventStore`)."""
        sql = "SELECT stream_id, max(version), max(recorded_at) FROM events"
        params: tuple[Any, ...] = ()
        if category is not None:
            prefix = f"{category}-"
            sql += " WHERE substr(stream_id, 1, ?) = ?"
            params = (len(prefix), prefix)
        rows = await self._fetch(sql + " GROUP BY stream_id ORDER BY stream_id", params)
        return [StreamInfo(row[0], row[1], self._time(row[2])) for row in rows]

    async def head_position(self) -> int:
        """Return the position of the last event (see :class:`EventStore`)."""
        rows = await self._fetch("SELECT coalesce(max(position), 0) FROM events", ())
        head = int(rows[0][0])
        self._watch.advance(head)
        return head

    async def wait_for_events(self, after_position: int, timeout: float) -> None:  # noqa: ASYNC109  # a poll interval
        """Return when this store committed an event beyond ``after_position``, or after
        ``timeout`` (other processes' appends are found by reading again then)."""
        self._check_open()
        await self._watch.wait_beyond(after_position, timeout)

    async def load_checkpoint(self, name: str) -> int:
        """Return the checkpoint ``name`` (see :class:`EventStore`)."""
        rows = await self._fetch(
            "SELECT position FROM checkpoints WHERE name = ?", (check_checkpoint(name),)
        )
        return int(rows[0][0]) if rows else 0

    async def list_checkpoints(self) -> dict[str, int]:
        """Return every checkpoint (see :class:`EventStore`)."""
        rows = await self._fetch("SELECT name, position FROM checkpoints ORDER BY name", ())
        return {name: position for name, position in rows}

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Save the checkpoint ``name`` in the writer's next transaction."""
        await self._transact(name, position, None)

    async def commit_with_checkpoint(
        self, name: str, position: int, work: TransactionWork[T], *, expected: int | None = None
    ) -> T:
        """Run ``work(connection)`` and set checkpoint ``name`` to ``position`` atomically.

        ``work`` runs on the writer's thread inside the writer's transaction (in a savepoint of
        its own), with the ``sqlite3.Connection`` to write the read model through. It must not
        commit, roll back or touch the event loop. If it raises, its writes are rolled back,
        the checkpoint is unchanged and the error is raised here.

        :raises CheckpointConflictError: if ``expected`` is given and the checkpoint is not
            there (checked in the same transaction; ``work`` did not run)
        """
        if expected is not None:
            check_checkpoint(name, expected)
        return cast(T, await self._transact(name, position, work, expected))

    async def _transact(
        self,
        name: str,
        position: int,
        work: TransactionWork[Any] | None,
        expected: int | None = None,
    ) -> Any:
        self._check_open()
        check_checkpoint(name, position)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._enqueue(_Transact(name, position, work, future, expected))
        return await future

    async def add_inline_projection(self, name: str, hook: InlineHook) -> None:
        """Call ``hook(connection, events)`` inside every append's transaction.

        The hook runs on the writer's thread (see :meth:`commit_with_checkpoint`); it gets every
        event after checkpoint ``name`` through the appended ones, and the checkpoint moves with
        them. If it raises, the append fails with that error and nothing of it is stored.
        When this returns, the hook has seen every event committed before (in one transaction:
        catch a long history up with :meth:`commit_with_checkpoint` batches first).

        :raises Exception: what the hook raised on the events it missed (it is not added then)
        """
        self._check_open()
        check_checkpoint(name)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # added first, so that no append commits between the catch-up and the hook
        self._inline[name] = hook
        self._enqueue(_CatchUpInline(name, hook, future))
        try:
            error = await future
        except BaseException:
            self._inline.pop(name, None)
            raise
        if error is not None:
            self._inline.pop(name, None)
            raise error

    def remove_inline_projection(self, name: str) -> None:
        """Stop calling the inline projection ``name`` (its checkpoint stays)."""
        self._inline.pop(name, None)

    async def load_snapshot(
        self, stream_id: str, max_version: int | None = None
    ) -> SnapshotRecord | None:
        """Return the latest snapshot at or before ``max_version`` (see :class:`EventStore`)."""
        rows = await self._fetch(
            "SELECT version, schema_version, state, recorded_at FROM snapshots "
            "WHERE stream_id = ? AND version <= ? ORDER BY version DESC LIMIT 1",
            (
                check_stream_id(stream_id),
                MAX_VERSION if max_version is None else max(min(max_version, MAX_VERSION), -1),
            ),
        )
        if not rows:
            return None
        version, schema_version, state, recorded_at = rows[0]
        return snapshot_record(stream_id, version, state, schema_version, self._time(recorded_at))

    async def load_latest(self, stream_id: str) -> Latest:
        """Return the latest snapshot and the first page of events after it, in one read.

        The runtime's fast path for activating an actor: one thread hop instead of two.
        Returns ``(snapshot or None, [(version, type, data), ...], complete)``; when
        ``complete`` is false, more events follow the page (read them with
        :meth:`read_stream_data`).
        """
        future: asyncio.Future[Latest] = asyncio.get_running_loop().create_future()

        def resolve(outcome: Latest | BaseException) -> None:
            if future.done():  # the loader was cancelled
                return
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        self.load_latest_then(stream_id, resolve)
        return await future

    def load_latest_then(
        self, stream_id: str, on_loaded: Callable[[Latest | BaseException], None]
    ) -> None:
        """Like :meth:`load_latest`, but call ``on_loaded`` on the loop with what it returns,
        or the StoreError, instead of returning it.

        The runtime's path for activating an actor: no task and no future, and the load's
        reply reaches the actor in the loop step that receives it. ``on_loaded`` must not
        raise (what it raises is logged). Bad arguments raise here, at once.
        """
        check_stream_id(stream_id)
        self._check_open()
        self._loads.append((stream_id, on_loaded))
        if not self._loading:
            self._start_loads()

    def _latest_result(
        self, stream_id: str, snapshot_row: Any, rows: list[Any], page: int | None
    ) -> Latest:
        """Turn the rows a load read into what load_latest returns (on the loop).

        :param page: the page size if the rows came from :func:`_latest_many` (their JSON
            already decoded), None if from :func:`_latest` (a page of ``read_page_size``)
        """
        decoded = page is not None
        snapshot = None
        if snapshot_row is not None:
            version, schema_version, state, recorded_at = snapshot_row
            if decoded:
                snapshot = SnapshotRecord(
                    stream_id, version, state, schema_version, self._time(recorded_at)
                )
            else:
                snapshot = snapshot_record(
                    stream_id, version, state, schema_version, self._time(recorded_at)
                )
                if snapshot is None:  # damaged: the events after it are of no use without it
                    return None, [], False
        if decoded:
            events = [(row[0], row[1], row[2]) for row in rows]
        else:
            events = event_data(stream_id, rows)
        # the head it read is not remembered for the writer: a load of every aggregate (a
        # restart, a scan) would fill the known heads with streams nobody writes, and keep them
        # after the actors passivate; the writer asks for unknown heads once a batch instead
        return snapshot, events, len(rows) < (self.read_page_size if page is None else page)

    def _start_loads(self) -> None:
        """Hand every waiting load to the reader's thread as one job.

        Loads coalesce as appends do: when many actors activate at once (a restart under load,
        a burst to cold aggregates), one thread hop and one loop wake-up serve all the loads
        that waited, not one each. A load with the reader idle starts at once.
        """
        conn = self._reader
        loads, self._loads = self._loads[:_LOADS_PER_JOB], self._loads[_LOADS_PER_JOB:]
        if conn is None or not conn.alive:
            self._loads_done(
                loads, [StoreError(f"{self!r} cannot read: it is closed")] * len(loads)
            )
            return
        self._loading = True
        loop = asyncio.get_running_loop()
        raw, page_size, done = conn.connection, self.read_page_size, self._loads_done

        in_job = min(page_size, _EVENTS_PER_LOAD_IN_JOB)

        def run_on_thread() -> None:
            outcomes: list[Any] = []
            together = _latest_many(raw, [stream_id for stream_id, _ in loads], in_job)
            for stream_id, _ in loads:
                if together is not None:
                    snapshot, events = together[stream_id]
                    outcomes.append((snapshot, events, in_job))
                    continue
                try:
                    outcomes.append((*_latest(raw, stream_id, page_size), None))
                except sqlite3.Error as exc:  # this load's error, not the others'
                    outcomes.append(exc)
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(done, loads, outcomes)

        # one hop to the reader's thread for all of them, no future per load
        conn.submit(run_on_thread)

    def _loads_done(self, loads: list[tuple[str, _OnLoaded]], outcomes: list[Any]) -> None:
        self._loading = False
        for (stream_id, on_loaded), outcome in zip(loads, outcomes, strict=True):
            result: Latest | BaseException
            if isinstance(outcome, sqlite3.Error):
                result = StoreError(f"reading {str(self.path)!r} failed: {outcome}")
                result.__cause__ = outcome
            elif isinstance(outcome, BaseException):
                result = outcome
            else:
                try:
                    result = self._latest_result(stream_id, *outcome)
                except Exception as exc:  # a stored value that no longer decodes
                    result = exc
            try:
                on_loaded(result)
            except Exception:  # the other loaders must still hear back
                logger.exception("a load's callback failed", extra={"stream_id": stream_id})
        if self._loads and not self._loading:
            self._start_loads()

    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        self._check_open()
        assert self._reader is not None
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            msg = f"reading {str(self.path)!r} failed: {exc}"
            raise StoreError(msg) from exc

    def _stored(self, row: Any) -> StoredEvent:
        return stored_event(row, self._time(row[7]))

    def _time(self, text: str) -> datetime:
        # events of one batch share one commit time: parse each distinct text once
        cached_text, cached = self._time_cache
        if text != cached_text:
            cached = datetime.fromisoformat(text)
            self._time_cache = (text, cached)
        return cached


def _time_range(since: datetime | None, until: datetime | None) -> tuple[str, tuple[str, ...]]:
    """SQL conditions for ``[since, until)`` on ``recorded_at``.

    Commit times are stored as ``datetime.isoformat()`` text in UTC, which sorts as the times
    do, so that a text comparison is a time comparison.
    """
    sql = ""
    params: tuple[str, ...] = ()
    start, end = check_time("since", since), check_time("until", until)
    if start is not None:
        sql += " AND recorded_at >= ?"
        params += (start.isoformat(),)
    if end is not None:
        sql += " AND recorded_at < ?"
        params += (end.isoformat(),)
    return sql, params


async def _scalar(conn: ConnectionThread, sql: str) -> int:
    rows = list(await conn.execute_fetchall(sql))
    return int(rows[0][0])


def _latest(conn: sqlite3.Connection, stream_id: str, page_size: int) -> tuple[Any, list[Any]]:
    """The latest snapshot row and the first page of event rows after it (reader's thread)."""
    snapshot = conn.execute(
        "SELECT version, schema_version, state, recorded_at FROM snapshots "
        "WHERE stream_id = ? ORDER BY version DESC LIMIT 1",
        (stream_id,),
    ).fetchone()
    after = snapshot[0] if snapshot is not None else 0
    rows = conn.execute(
        "SELECT version, type, data, position FROM events WHERE stream_id = ? AND version > ? "
        "ORDER BY version LIMIT ?",
        (stream_id, after, page_size),
    ).fetchall()
    return snapshot, rows


@functools.cache
def _latest_many_sql(streams: int) -> str:
    """One query for the latest snapshot and first page of events of up to ``streams`` streams,
    all of it in one row of JSON text (see :func:`_latest_many`).

    Per stream: ``[stream_id, [version, schema_version, state, recorded_at] or null,
    [[version, type, data], ...]]``. ``state`` and ``data`` are embedded as stored (they are
    JSON already); a value that is not valid JSON makes the whole text fail to parse (or
    changes its shape, which the caller checks), and the caller then reads stream by stream,
    which says which stream holds it. NULLs pad the stream
    ids up to ``streams``, so that a few statement sizes serve every job.
    """
    wanted = ", ".join(["(?)"] * streams)
    return (
        "SELECT '[' || coalesce(group_concat(item, ','), '') || ']' FROM ("
        "SELECT '[' || json_quote(w.column1) || ',' || coalesce(("
        "SELECT '[' || s.version || ',' || s.schema_version || ',' || s.state || ',' || "
        "json_quote(s.recorded_at) || ']' FROM snapshots AS s WHERE s.stream_id = w.column1 "
        "ORDER BY s.version DESC LIMIT 1), 'null') || ',' || coalesce(("
        "SELECT '[' || group_concat('[' || e.version || ',' || json_quote(e.type) || ',' || "
        "e.data || ']', ',') || ']' FROM (SELECT version, type, data FROM events "
        "WHERE stream_id = w.column1 AND version > coalesce(("
        "SELECT max(version) FROM snapshots WHERE stream_id = w.column1), 0) "
        "ORDER BY version LIMIT ?1) AS e), '[]') || ']' AS item "
        f"FROM (VALUES {wanted}) AS w WHERE w.column1 IS NOT NULL)"
    )


def _latest_many(
    conn: sqlite3.Connection, stream_ids: list[str], page_size: int
) -> dict[str, tuple[Any, list[Any]]] | None:
    """The latest snapshot and the first page of events after it, for many streams in one
    statement (reader's thread); None if that cannot be done (then read stream by stream).

    Why one statement: Python's sqlite3 releases the GIL for every step of a statement, one
    per row, and takes it back after. While the event loop's thread runs Python (a busy
    runtime), each taking back waits for a switch interval: measured here, 2,000 rows fetched
    beside a busy thread took 2.2 s (1 ms alone), and 200 one-row queries 2.1 s; 1,000 cold
    aggregates asked under load, two queries each, waited up to 0.9-2.0 s for their first
    reply. Here SQLite builds the whole answer as one JSON text, so a job of many loads costs
    one step, whatever it reads, and orjson parses it in one call.

    Returns per stream the snapshot as ``[version, schema_version, state, recorded_at]``
    (``state`` decoded) or None, and the events as ``[version, type, data]`` (``data``
    decoded), in version order.
    """
    size = _statement_rows(len(stream_ids))
    params: list[Any] = [page_size, *stream_ids]
    params += [None] * (size - len(stream_ids))
    try:
        (text,) = conn.execute(_latest_many_sql(size), params).fetchone()
        found = decode_json(text)
    except (sqlite3.Error, ValueError):  # orjson's decode error is a ValueError
        # no JSON functions in this SQLite build, or a stored value that is not JSON (the
        # stream-by-stream read reports it against its stream)
        return None
    latest: dict[str, tuple[Any, list[Any]]] = {}
    try:
        for stream_id, snapshot, events in found:
            if snapshot is not None and len(snapshot) != 4:
                return None
            if any(a[0] >= b[0] for a, b in itertools.pairwise(events)):
                events.sort(key=_version_of)  # group_concat's order is SQLite's choice
            latest[stream_id] = (snapshot, events)
    except (TypeError, ValueError, IndexError):
        # a stored value that is not JSON by itself but parsed as part of the whole text
        # (such as "1],[2"), and so changed its shape: read stream by stream, as above
        return None
    if not all(stream_id in latest for stream_id in stream_ids):
        return None
    return latest


def _version_of(event: list[Any]) -> int:
    return int(event[0])


def _commit_batch(
    conn: sqlite3.Connection,
    batch: list[_Op],
    known_heads: dict[str, int],
    now: datetime,
    now_text: str,
    *,
    inline: dict[str, InlineHook] | None,
) -> tuple[_Results, dict[str, int], int]:
    """Commit a batch in one transaction, on the connection's thread.

    Returns one result per op (an AppendResult, an error for that op alone, or what a
    transaction's work returned), the stream heads the batch learned, and the head position
    after the batch. Raises if the transaction fails as a whole; then nothing of the batch is
    stored.
    """
    if inline is None and not conn.in_transaction:
        done = _all_at_once(conn, batch, known_heads, now, now_text)
        if done is not None:
            return done
    commit = _BatchCommit(conn, known_heads, now=now, now_text=now_text, inline=inline)
    conn.execute("BEGIN IMMEDIATE")
    try:
        commit.position = (
            conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0] + 1
        )
        commit.run(batch)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return commit.results, commit.heads, commit.position - 1


#: stream ids per head query (SQLite binds at most 32,766 parameters, older builds 999)
_STREAMS_PER_HEAD_QUERY: Final = 500

#: rows per multi-row INSERT (a power of two; at 8 parameters a row it stays under the 999
#: parameters a statement of older SQLite builds allows)
_ROWS_PER_INSERT: Final = 64

#: parameters per events row
_EVENT_COLUMNS: Final = 8

#: the most rows one autocommit statement inserts (a bigger batch goes the general way)
_MAX_ROWS_AT_ONCE: Final = 1024


@functools.cache
def _insert_rows_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return (
        "INSERT INTO events (position, stream_id, version, type, data, metadata, event_id, "
        f"recorded_at) VALUES {values}"
    )


@functools.cache
def _insert_all_sql(rows: int) -> str:
    """One statement inserting up to ``rows`` rows, taking their positions and checking the
    heads the writer did not know.

    Each row gives its offset (1, 2, ...) in place of a position, and last the head its stream
    must have now (NULL: the writer knows it). A stream at another head makes the row's
    stream id NULL, which the NOT NULL constraint refuses, so the statement stores nothing.
    Rows of NULLs pad the parameters up to ``rows``, so that a few statement sizes serve every
    batch. The SELECT reads the table it inserts into, so SQLite runs it to the end before the
    first insert: every check sees the heads from before the statement.
    """
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return (
        "INSERT INTO events (position, stream_id, version, type, data, metadata, event_id, "
        "recorded_at) SELECT (SELECT coalesce(max(position), 0) FROM events) + column1, "
        "CASE WHEN column9 IS NULL OR column9 = (SELECT coalesce(max(version), 0) FROM events "
        "WHERE stream_id = column2) THEN column2 END, "
        "column3, column4, column5, column6, column7, column8 "
        f"FROM (VALUES {values}) WHERE column1 IS NOT NULL"
    )


#: the events after its snapshot that a load reads within its job's one statement: an
#: aggregate's whole tail when snapshots are taken every few dozen events; a longer stream reads
#: the rest page by page, row by row, where SQLite's stepping runs beside the loop's decoding
#: (a whole page of 2,000 rows as JSON was slower, measured: 38-40 ms for a 10,000-event
#: replay against 35-36 ms, and 219-285 ms against 153-167 ms for a read_all of 20,000 events
#: beside a busy runtime)
_EVENTS_PER_LOAD_IN_JOB: Final = 128

#: parameters per row of the all-at-once statement: the row, and the head to check
_ALL_AT_ONCE_COLUMNS: Final = 9

#: above this many rows, all-at-once statements come in multiples of it
_ALL_AT_ONCE_STEP: Final = 64


def _statement_rows(rows: int) -> int:
    """The size of the all-at-once statement that takes ``rows`` rows: the next power of two up
    to 64, then the next multiple of 64. A few sizes serve every batch (each stays compiled in
    the connection's statement cache), and a batch binds at most 63 rows of padding: with
    powers of two all the way, a batch of 550 rows bound 474 (4,266 NULL parameters, on the
    writer thread, holding the GIL)."""
    if rows <= _ALL_AT_ONCE_STEP:
        return 1 << (rows - 1).bit_length()
    return -(-rows // _ALL_AT_ONCE_STEP) * _ALL_AT_ONCE_STEP


def _chunks(rows: int) -> list[int]:
    """Split ``rows`` into statement sizes from a small fixed set, so that every statement
    stays in the connection's statement cache: full chunks, then powers of two."""
    sizes = [_ROWS_PER_INSERT] * (rows // _ROWS_PER_INSERT)
    rest = rows % _ROWS_PER_INSERT
    size = _ROWS_PER_INSERT // 2
    while rest:
        if rest >= size:
            sizes.append(size)
            rest -= size
        size //= 2
    return sizes


def _all_at_once(
    conn: sqlite3.Connection,
    batch: list[_Op],
    known_heads: dict[str, int],
    now: datetime,
    now_text: str,
) -> tuple[_Results, dict[str, int], int] | None:
    """Commit a batch of appends that all expect the heads known, with one statement in
    SQLite's autocommit mode; return what :func:`_commit_batch` returns, or None (having
    stored nothing) if it cannot.

    The statement is the whole transaction: it takes the write lock, checks the heads the
    writer does not know, gives the positions (``max + 1`` on), inserts, and commits, in one
    release of the GIL and one fsync. A refusal by a constraint (or a check) rolls it back, and
    the batch then goes the general way, which finds out which append failed and why.

    One pass over the batch, and no object for the general way: with one caller asking in
    sequence, every batch is one append, and this is the writer's Python while the caller
    waits.
    """
    max_rows = min(
        conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // _ALL_AT_ONCE_COLUMNS,
        _MAX_ROWS_AT_ONCE,
    )
    planned: list[tuple[int, int]] = []  # per append: its new version, its first offset
    after: dict[str, int] = {}  # the heads once the batch is stored
    unknown: dict[str, int] | None = None  # streams whose head the statement checks
    params: list[Any] = []
    offset = 0
    for op in batch:
        if type(op) is not _Append:
            return None
        version = op.expected_version
        if version is None:
            return None
        stream_id = op.stream_id
        check = None
        head = after.get(stream_id)
        if head is None:
            head = known_heads.get(stream_id)
            if head is None:  # not known: take the expected one, the statement checks it
                if unknown is None:
                    unknown = {}
                head = unknown[stream_id] = version
        if head != version:
            return None
        if unknown is not None:
            check = unknown.get(stream_id)
        first = offset
        for kind, data, meta, event_id in op.rows:
            offset += 1
            version += 1
            params += (offset, stream_id, version, kind, data, meta, event_id, now_text, check)
        if offset > max_rows:
            return None
        planned.append((version, first))
        after[stream_id] = version
    if not offset:
        return None
    size = _statement_rows(offset)
    if size > max_rows:
        return None
    params += (None,) * ((size - offset) * _ALL_AT_ONCE_COLUMNS)
    try:
        cursor = conn.execute(_insert_all_sql(size), params)
    except sqlite3.IntegrityError:
        return None
    # rows go in as listed: the last one took position base + offset
    base = cast(int, cursor.lastrowid) - offset
    return _Planned(planned, base, now), after, base + offset


class _Planned:
    """The results of an all-at-once batch, made one by one as the loop answers its appends.

    Not a list of them made on the writer's thread: each result would then stay alive until
    the whole batch is answered, one more object per command for the garbage collector (W1:
    young collections 559-576 -> 466-479 a run, full ones 5 -> 4). Iterated once, by _answer.
    """

    __slots__ = ("base", "now", "planned")

    def __init__(self, planned: list[tuple[int, int]], base: int, now: datetime) -> None:
        self.planned, self.base, self.now = planned, base, now

    def __iter__(self) -> Iterator[AppendResult]:
        base, now = self.base + 1, self.now
        for version, first in self.planned:
            yield AppendResult(version, base + first, now)


#: one result per op of a batch: an AppendResult, an error for that op alone, or what a
#: transaction's work returned (all-at-once batches make theirs as they are answered)
_Results = list[Any] | _Planned


class _BatchCommit:
    """The ops of one batch, inside the writer's transaction, on the connection's thread.

    **The fast way.** Consecutive appends that expect the head the writer knows form a run whose
    rows are inserted by a few multi-row statements, not one statement per append. Each
    statement is one release of the GIL while SQLite works; getting the GIL back can take up
    to a switch interval while the loop thread decides the next commands, so a statement per
    append made the writer wait more than it worked. The run's results are given as if every
    insert succeeds; if a constraint refuses a statement (another process appended, an event
    id is stored already), the run is rolled back to its savepoint and its appends go one at a
    time, which finds out which one failed and why. The heads of streams the writer does not
    know are queried first, in one query for the batch.

    Every other op (snapshots, read-model transactions, appends with no expected version or an
    unexpected one, and all appends while inline projections run) goes one at a time.
    """

    __slots__ = (
        "conn",
        "heads",
        "inline",
        "known_heads",
        "now",
        "now_text",
        "position",
        "results",
        "run_ops",
        "run_params",
        "run_results_from",
        "run_saved_heads",
        "run_start",
    )

    def __init__(
        self,
        conn: sqlite3.Connection,
        known_heads: dict[str, int],
        *,
        now: datetime,
        now_text: str,
        inline: dict[str, InlineHook] | None,
    ) -> None:
        self.conn = conn
        self.known_heads = known_heads
        #: the next free position (known once the transaction began)
        self.position = 0
        self.now = now
        self.now_text = now_text
        self.inline = inline
        #: one per op so far
        self.results: list[Any] = []
        #: stream heads this batch wrote or checked
        self.heads: dict[str, int] = {}
        self.run_ops: list[_Append] = []
        self.run_params: list[Any] = []
        self.run_start = 0
        self.run_results_from = 0
        #: the heads before the run, to restore if it falls back (None: not in ``heads``)
        self.run_saved_heads: dict[str, int | None] = {}

    def run(self, batch: list[_Op]) -> None:
        """Carry out every op of the batch, in order."""
        # inline projections run per append, each in a savepoint: no fast way for them
        fast = not self.inline
        if fast:
            self._learn_heads(batch)
        conn, results, heads, known_heads = self.conn, self.results, self.heads, self.known_heads
        for op in batch:
            if fast and type(op) is _Append and op.expected_version is not None:
                head = heads.get(op.stream_id)
                if head is None:
                    head = known_heads.get(op.stream_id)
                if head == op.expected_version:
                    self._add_to_run(op, head)
                    continue
            if self.run_ops:
                self._flush_run()
            if isinstance(op, _SaveSnapshot):
                conn.execute(_SAVE_SNAPSHOT, (*op.row, self.now_text))
                results.append(None)
            elif isinstance(op, _Transact):
                results.append(_transact(conn, op, self.now_text))
            elif isinstance(op, _CatchUpInline):
                results.append(_catch_up_inline(conn, op, self.position, self.now, self.now_text))
            else:
                results.append(self._append_one(op))
        if self.run_ops:
            self._flush_run()

    def _learn_heads(self, batch: list[_Op]) -> None:
        """Query, in one query, the heads of the streams appended to that the writer does not
        know: a burst to cold streams (after a restart, to new aggregates) then takes the fast
        way as well."""
        known = self.known_heads
        unknown = list(
            {
                op.stream_id: None
                for op in batch
                if type(op) is _Append
                and op.expected_version is not None
                and op.stream_id not in known
            }
        )
        heads = self.heads
        for start in range(0, len(unknown), _STREAMS_PER_HEAD_QUERY):
            chunk = unknown[start : start + _STREAMS_PER_HEAD_QUERY]
            for stream_id in chunk:
                heads[stream_id] = 0  # no row: an empty stream
            marks = ", ".join("?" * len(chunk))
            sql = (
                f"SELECT stream_id, max(version) FROM events WHERE stream_id IN ({marks}) "
                "GROUP BY stream_id"
            )
            heads.update(self.conn.execute(sql, chunk).fetchall())

    def _add_to_run(self, op: _Append, head: int) -> None:
        """Take an append that expects ``head`` into the run, giving its result now."""
        if not self.run_ops:
            self.run_start = self.position
            self.run_results_from = len(self.results)
        self.run_ops.append(op)
        stream_id = op.stream_id
        heads = self.heads
        if stream_id not in self.run_saved_heads:
            self.run_saved_heads[stream_id] = heads.get(stream_id)
        params = self.run_params
        now_text = self.now_text
        position = first = self.position
        version = head
        for kind, data, meta, event_id in op.rows:
            version += 1
            params += (position, stream_id, version, kind, data, meta, event_id, now_text)
            position += 1
        self.position = position
        heads[stream_id] = version
        self.results.append(AppendResult(version, first, self.now))

    def _flush_run(self) -> None:
        """Insert the run's rows, or if a constraint refuses them, its appends one at a time."""
        conn = self.conn
        params = self.run_params
        chunks = _chunks(len(params) // _EVENT_COLUMNS)
        guarded = len(chunks) > 1  # a single statement undoes itself when it fails
        if guarded:
            conn.execute("SAVEPOINT fast_run")
        offset = 0
        try:
            for rows in chunks:
                end = offset + rows * _EVENT_COLUMNS
                conn.execute(_insert_rows_sql(rows), params[offset:end])
                offset = end
        except sqlite3.IntegrityError:
            if guarded:
                conn.execute("ROLLBACK TO fast_run")
                conn.execute("RELEASE fast_run")
            self._one_at_a_time()
        else:
            if guarded:
                conn.execute("RELEASE fast_run")
        self.run_ops, self.run_params, self.run_saved_heads = [], [], {}

    def _one_at_a_time(self) -> None:
        heads = self.heads
        for stream_id, saved in self.run_saved_heads.items():
            if saved is None:
                heads.pop(stream_id, None)
            else:
                heads[stream_id] = saved
        del self.results[self.run_results_from :]
        self.position = self.run_start
        for op in self.run_ops:
            self.results.append(self._append_one(op))

    def _append_one(self, op: _Append) -> AppendResult | BaseException:
        """Append one op's events, checking its expected version, and return its result or
        the error for this append alone (nothing of it stays stored)."""
        conn, heads = self.conn, self.heads
        stream_id, expected = op.stream_id, op.expected_version
        head = heads.get(stream_id)
        if head is None:
            head = self.known_heads.get(stream_id)
        if expected is None or head != expected:
            head = conn.execute(_STREAM_HEAD, (stream_id,)).fetchone()[0]
            heads[stream_id] = head
            if expected is not None and head != expected:
                # the stream moved on: maybe by this very append, committed before
                prior = _prior_append(conn, stream_id, expected, op.rows)
                return prior if prior is not None else ConcurrencyError(stream_id, expected, head)
        position, now, now_text, inline = self.position, self.now, self.now_text, self.inline
        rows = [
            (position + i, stream_id, head + i + 1, kind, data, meta, event_id, now_text)
            for i, (kind, data, meta, event_id) in enumerate(op.rows)
        ]
        # one statement undoes itself when it fails; several (or inline projections, which
        # write too) need a savepoint around them
        single = len(rows) == 1 and not inline
        try:
            if single:
                conn.execute(_INSERT_EVENT, rows[0])
            else:
                conn.execute("SAVEPOINT append")
                conn.executemany(_INSERT_EVENT, rows)
        except sqlite3.IntegrityError as exc:
            if not single:
                conn.execute("ROLLBACK TO append")
                conn.execute("RELEASE append")
            actual = conn.execute(_STREAM_HEAD, (stream_id,)).fetchone()[0]
            heads[stream_id] = actual
            prior = _prior_append(conn, stream_id, expected, op.rows)
            if prior is not None:  # this append was committed before: a retry
                return prior
            if actual != head:  # another process appended since we last looked
                return ConcurrencyError(stream_id, head, actual)
            return _append_refused(conn, stream_id, op.rows, exc)
        if inline:
            refused = _run_inline(conn, inline, rows, now, now_text)
            if refused is not None:
                conn.execute("ROLLBACK TO append")
                conn.execute("RELEASE append")
                return refused
        if not single:
            conn.execute("RELEASE append")
        heads[stream_id] = head + len(rows)
        self.position = position + len(rows)
        return AppendResult(head + len(rows), position, now)


def _transact(conn: sqlite3.Connection, op: _Transact, now_text: str) -> Any:
    """Run a transaction op's work and save its checkpoint in a savepoint; return the outcome.

    A failure of the work is the op's result (the savepoint is rolled back), not the batch's.
    """
    if op.expected is not None:
        found = conn.execute("SELECT position FROM checkpoints WHERE name = ?", (op.name,))
        row = found.fetchone()
        actual = int(row[0]) if row is not None else 0
        if actual != op.expected:
            return CheckpointConflictError(op.name, op.expected, actual)
    if op.work is None:
        conn.execute(_SAVE_CHECKPOINT, (op.name, op.position, now_text))
        return None
    conn.execute("SAVEPOINT transact")
    try:
        outcome = op.work(conn)
        conn.execute(_SAVE_CHECKPOINT, (op.name, op.position, now_text))
    except Exception as exc:
        conn.execute("ROLLBACK TO transact")
        conn.execute("RELEASE transact")
        return exc
    conn.execute("RELEASE transact")
    return outcome


def _run_inline(
    conn: sqlite3.Connection,
    inline: dict[str, InlineHook],
    rows: list[tuple[Any, ...]],
    now: datetime,
    now_text: str,
) -> BaseException | None:
    """Feed the inline projections the new rows (and what they missed before them).

    Runs inside the append's savepoint; returns the error of a failing projection (the caller
    rolls the append back) or None.
    """
    for name, hook in inline.items():
        error = _feed_inline(
            conn, name, hook, rows=rows, first_new=rows[0][0], now=now, now_text=now_text
        )
        if error is not None:
            return error
    return None


def _feed_inline(
    conn: sqlite3.Connection,
    name: str,
    hook: InlineHook,
    *,
    rows: list[tuple[Any, ...]],
    first_new: int,
    now: datetime,
    now_text: str,
) -> BaseException | None:
    """Call one inline projection with every event after its checkpoint, then move it.

    ``rows`` are event rows inserted by this transaction (from position ``first_new`` on);
    the events before them are read back from the table.
    """
    found = conn.execute("SELECT position FROM checkpoints WHERE name = ?", (name,)).fetchone()
    done = found[0] if found is not None else 0
    unseen = [
        stored_event(r, datetime.fromisoformat(r[7]))
        for r in conn.execute(
            f"SELECT {_COLUMNS} FROM events WHERE position > ? AND position < ? ORDER BY position",
            (done, first_new),
        )
    ]
    unseen.extend(
        StoredEvent(
            stream_id, version, position, kind, decode_json(data), decode_json(meta), event_id, now
        )
        for position, stream_id, version, kind, data, meta, event_id, _ in rows
        if position > done
    )
    if not unseen:
        return None
    try:
        hook(conn, unseen)
    except ActorsourceError as exc:
        return exc
    except Exception as exc:
        error = StoreError(f"inline projection {name!r} failed: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error
    conn.execute(_SAVE_CHECKPOINT, (name, unseen[-1].position, now_text))
    return None


def _catch_up_inline(
    conn: sqlite3.Connection, op: _CatchUpInline, first_new: int, now: datetime, now_text: str
) -> BaseException | None:
    """Feed a newly added inline projection what it has not seen, in a savepoint."""
    conn.execute("SAVEPOINT catch_up")
    error = _feed_inline(
        conn, op.name, op.hook, rows=[], first_new=first_new, now=now, now_text=now_text
    )
    if error is not None:
        conn.execute("ROLLBACK TO catch_up")
    conn.execute("RELEASE catch_up")
    return error


def _prior_append(
    conn: sqlite3.Connection,
    stream_id: str,
    expected: int | None,
    rows: list[tuple[str, str, str, str]],
) -> AppendResult | None:
    """The result of an earlier append of exactly these events at these versions, if any (see
    :func:`prior_append`). Only called on the failure paths of an append."""
    event_ids = [row[3] for row in rows]
    found = None
    if expected is None:
        found = conn.execute(
            "SELECT version FROM events WHERE event_id = ? AND stream_id = ?",
            (event_ids[0], stream_id),
        ).fetchone()
    start = retry_start(expected, None if found is None else found[0], len(event_ids))
    if start is None:
        return None
    stored = conn.execute(
        "SELECT event_id, position, recorded_at FROM events "
        "WHERE stream_id = ? AND version > ? AND version <= ? ORDER BY version",
        (stream_id, start, start + len(event_ids)),
    ).fetchall()
    prior = prior_append(event_ids, start, stored)
    if prior is None:
        return None
    return AppendResult(prior[0], prior[1], datetime.fromisoformat(prior[2]))


def _append_refused(
    conn: sqlite3.Connection,
    stream_id: str,
    rows: list[tuple[str, str, str, str]],
    exc: sqlite3.IntegrityError,
) -> StoreError:
    """Return the error for an append refused by a constraint other than the stream version."""
    event_ids = [row[3] for row in rows]
    seen: set[str] = set()
    twice = None
    for event_id in event_ids:
        if event_id in seen:
            twice = event_id
            break
        seen.add(event_id)
    if twice is not None:
        msg = f"event id {twice!r} appears twice in one append to {stream_id!r}"
    else:
        stored = next(
            (
                i
                for i in event_ids
                if conn.execute("SELECT 1 FROM events WHERE event_id = ?", (i,)).fetchone()
            ),
            None,
        )
        if stored is not None:
            msg = f"event id {stored!r} is already stored (appending to {stream_id!r})"
        else:
            msg = f"appending to {stream_id!r} failed: {exc}"
    error = StoreError(f"{msg}; nothing of this append was stored")
    error.__cause__ = exc
    return error
