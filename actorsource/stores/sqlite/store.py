"""The SQLite event store: the writer and the reader together, behind the store contract."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import anyio

from ..._errors import (
    StoreError,
)
from ..._records import (
    AppendResult,
    NewEvent,
    SnapshotRecord,
)
from .._base import (
    HeadWatch,
    InlineHook,
    StorageGrowth,
    StoreCapabilities,
    StoreState,
    T,
    TransactionWork,
    check_append,
    check_checkpoint,
    check_compress_over,
    check_keep,
    check_snapshot,
    compress_json,
    encode_rows,
    encode_snapshot_state,
)
from ._thread import ConnectionThread
from .keys import SQLiteSubjectKeys
from .ops import _Append, _CatchUpInline, _SaveSnapshot, _Transact, _Work
from .reads import SQLiteReads
from .schema import SCHEMA_VERSION, Synchronous, connect, open_error, prepare, read_identity
from .timers import SQLiteTimers
from .writer import SQLiteWriter


class SQLiteEventStore(SQLiteWriter, SQLiteReads, SQLiteSubjectKeys, SQLiteTimers):
    """An event store in one SQLite file (WAL, ``synchronous=FULL`` by default).

    Several runtimes and several processes may use one file at once: writes are serialized by
    SQLite's lock (waiting up to ``busy_timeout`` seconds), and every append checks its
    expected version.

    :param path: the database file; it is created with its schema on first open (unless
        ``read_only``)
    :param synchronous: SQLite's ``synchronous`` setting; ``FULL`` makes every acknowledged
        append survive power loss, ``NORMAL`` only a process crash
    :param busy_timeout: seconds to wait for another connection's write lock
    :param max_batch: the most appends one transaction takes
    :param read_page_size: rows fetched per thread hop when reading
    :param known_heads: how many stream heads the writer remembers (to skip version queries)
    :param cache_kib: SQLite page cache per connection, in KiB
    :param read_only: open an existing store only to read it (tools that inspect a store):
        the file is opened in SQLite's read-only mode and nothing is created, upgraded or
        written; a missing file, or one without an actorsource store, is refused when opening
        (:class:`StoreError`); a store of an older schema version is read as it is; every write
        raises :class:`StoreError`
    :param compress_over: store the data of events, and snapshot states, whose JSON is longer
        than this many characters compressed (zlib; read back transparently); ``None``: never
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
        read_only: bool = False,
        compress_over: int | None = None,
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
        self.cache_kib = cache_kib
        #: whether the store was made to be read only (see the class docstring)
        self.read_only = read_only
        self._watch = HeadWatch()
        self._init_writer(max_batch, known_heads, check_compress_over(compress_over))
        self._init_reads(read_page_size)

    def __repr__(self) -> str:
        return f"SQLiteEventStore({str(self.path)!r})"

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        """The schema version of the open store's file (this code's, unless opened read-only
        on an older one)."""
        self._check_open()
        return self._schema_version

    async def _open(self) -> None:
        if self.read_only:
            await self._open_read_only()
            return
        directory = self.path.parent
        if not directory.is_dir():
            msg = f"cannot open {str(self.path)!r}: directory {str(directory)!r} does not exist"
            raise StoreError(msg)
        try:
            try:
                self._writer = await self._connect("writer")
                await prepare(
                    self._writer,
                    self.path,
                    synchronous=self.synchronous,
                    busy_timeout=self.busy_timeout,
                )
                self._reader = await self._connect("reader")
                await self._reader.execute("PRAGMA query_only = ON")
            except sqlite3.Error as exc:
                raise open_error(self.path, exc) from exc
        except BaseException:
            await self._close_connections()
            raise
        self._schema_version = SCHEMA_VERSION
        self._drained = asyncio.Event()
        self._drained.set()

    async def _open_read_only(self) -> None:
        # the reader alone: no writer thread, no WAL switch, no schema
        if not self.path.is_file():
            msg = f"no actorsource database at {str(self.path)!r} (opened read-only: not created)"
            raise StoreError(msg)
        try:
            try:
                self._reader = await self._connect("reader", read_only=True)
                await self._reader.execute("PRAGMA query_only = ON")
                self._schema_version = await read_identity(self._reader, self.path)
            except sqlite3.Error as exc:
                raise open_error(self.path, exc) from exc
        except BaseException:
            await self._close_connections()
            raise
        self._drained = asyncio.Event()
        self._drained.set()

    async def _connect(self, role: str, *, read_only: bool = False) -> ConnectionThread:
        return await connect(
            self.path,
            role,
            busy_timeout=self.busy_timeout,
            cache_kib=self.cache_kib,
            read_only=read_only,
        )

    async def _close(self) -> None:
        try:
            # every write queued before close() is committed first (unless the wait is
            # cancelled: the application's shutdown may not wait for them)
            await self._drain_writes()
        finally:
            # the connections' threads end either way: they are not daemons, and a process
            # whose close was cancelled would never exit
            with anyio.CancelScope(shield=True):
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
        # _rows inlined: once per command on the runtime's path
        if self._state is not StoreState.OPEN:
            self._check_open()
        check_append(stream_id, expected_version, events)
        rows = encode_rows(events)
        self._enqueue(_Append(stream_id, expected_version, rows, None, on_done))

    def _rows(
        self, stream_id: str, expected_version: int | None, events: Sequence[NewEvent]
    ) -> list[tuple[str, str | bytes, str, str]]:
        """Check an append and encode its events as (type, data, metadata, event id) rows."""
        self._check_open()
        check_append(stream_id, expected_version, events)
        return encode_rows(events)

    async def save_snapshot(self, snapshot: SnapshotRecord, *, keep: int | None = None) -> None:
        """Save a snapshot in the writer's next transaction, deleting the stream's snapshots
        but the ``keep`` latest in it (see :class:`EventStore`)."""
        self._check_open()
        check_snapshot(snapshot)
        check_keep(keep)
        text = encode_snapshot_state(snapshot)
        state: str | bytes = text
        if self.compress_over is not None and len(text) > self.compress_over:
            state = compress_json(text)
        row = (snapshot.stream_id, snapshot.version, snapshot.schema_version, state)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(_SaveSnapshot(row, future, keep))
        await future

    def capabilities(self) -> StoreCapabilities:
        """Callback appends and loads, bursts, lean replays, the writer's lag, read-model
        writes in the writer's transactions (plain functions, on its thread), archiving and
        deleting streams, the storage growth, and timers."""
        return StoreCapabilities(
            append_then=self.append_then,
            submit_append=self.submit_append,
            load_latest=self.load_latest,
            load_latest_then=self.load_latest_then,
            read_stream_data=self.read_stream_data,
            burst=self.burst,
            writer_lag=self.writer_lag,
            transactional=self,
            archive_stream=self.archive_stream,
            delete_stream=self.delete_stream,
            delete_checkpoint=self.delete_checkpoint,
            storage_growth=self.storage_growth,
            timers=self,
            subject_keys=None if self.read_only else self,
        )

    def storage_growth(self) -> StorageGrowth:
        """Return how fast this store grows (see :class:`StorageGrowth`)."""
        self._check_open()
        return self.growth_meter.growth()

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Save the checkpoint ``name`` in the writer's next transaction."""
        await self._transact(name, position, None)

    async def delete_checkpoint(self, name: str) -> bool:
        """Remove checkpoint ``name`` in the writer's next transaction; return whether there
        was one."""
        self._check_open()
        check_checkpoint(name)

        def delete(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM checkpoints WHERE name = ?", (name,)).rowcount > 0

        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._enqueue(_Work(delete, future))
        return await future

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
