"""The event store contract: the core every store has, and the faster routes it may declare."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar, runtime_checkable

import attrs

from ..._records import (
    AppendResult,
    JSONDict,
    NewEvent,
    SnapshotInfo,
    SnapshotRecord,
    StoredEvent,
    StreamInfo,
)
from .cluster import ClusterStore
from .growth import StorageGrowth
from .keys import SubjectKeyStore
from .timers import TimerStore

#: what an append reports when it is done: its result, or why it failed
AppendCallback = Callable[[AppendResult | BaseException], None]
#: an activation's read: the latest snapshot, the first page of (version, type, data) after it,
#: and whether that page is all of the stream after the snapshot
Latest = tuple[SnapshotRecord | None, list[tuple[int, str, JSONDict]], bool]


@attrs.frozen(slots=True)
class StoreCapabilities:
    """What a store offers beyond the core contract, declared by the store itself.

    The runtime asks once (:meth:`EventStore.capabilities`) and uses each one the store has;
    where one is ``None`` it uses the core method named beside it. These capabilities change
    nothing stored: they are faster routes to the same results. The retention operations
    (``archive_stream``, ``delete_stream``) do change what is stored; a store without them
    cannot archive or delete, and the runtime says so.
    """

    #: a non-async append that calls back on the loop at commit, with no future (else
    #: ``submit_append``, else ``append``)
    append_then: Callable[[str, int | None, Sequence[NewEvent], AppendCallback], None] | None = None
    #: a non-async append returning a future resolved at commit (else ``append`` in a task)
    submit_append: (
        Callable[[str, int | None, Sequence[NewEvent]], asyncio.Future[AppendResult]] | None
    ) = None
    #: the latest snapshot and the first page of events after it, in one read (else
    #: ``load_snapshot``, then ``read_stream_data``)
    load_latest: Callable[[str], Awaitable[Latest]] | None = None
    #: :attr:`load_latest` with a callback on the loop instead of an awaitable
    load_latest_then: Callable[[str, Callable[[Latest | BaseException], None]], None] | None = None
    #: a stream's events as (version, type, data) only, for replay (else ``read_stream``)
    read_stream_data: Callable[[str, int], AsyncIterator[tuple[int, str, JSONDict]]] | None = None
    #: a context whose appends go to the writer together when it ends (else none)
    burst: Callable[[], AbstractContextManager[None]] | None = None
    #: seconds the oldest write not yet committed has waited, for health checks (else none)
    writer_lag: Callable[[], float] | None = None
    #: the store itself, if it runs read-model writes in its own transactions (exactly-once and
    #: inline projections; else none: the runtime refuses those projections)
    transactional: TransactionalStore | None = None
    #: whether :attr:`transactional`'s work and inline hooks may be coroutine functions, awaited
    #: inside the transaction on the event loop (PostgreSQL); else they must be plain functions
    #: (SQLite runs them on its writer thread, the memory store in one step of the loop)
    async_transactions: bool = False
    #: whether :attr:`transactional` undoes what a failed transaction's work wrote (the memory
    #: store's read models are Python objects it cannot undo: exactly-once projections then
    #: commit an event at a time, so that a failure never hands an event over twice)
    transactions_roll_back: bool = True
    #: ``archive_stream(stream_id, through_version, max_position)``: remove the stream's
    #: events up to ``through_version`` in one transaction, checking there that they are
    #: behind its latest snapshot, before its last event, at or below ``max_position`` and
    #: every stored checkpoint; return how many were removed (see ``retention.archive_refusal``)
    archive_stream: Callable[[str, int, int | None], Awaitable[int]] | None = None
    #: ``delete_stream(stream_id, tombstone, hard)``: append the tombstone event after the
    #: stream's last event and, if ``hard``, remove every other event and snapshot of the
    #: stream, in one transaction (see ``retention.deletion_refusal``)
    delete_stream: Callable[[str, NewEvent, bool], Awaitable[AppendResult]] | None = None
    #: ``delete_checkpoint(name)``: remove a reader's stored checkpoint (a projection no
    #: longer deployed, which would hold archiving back for ever); return whether there was one
    delete_checkpoint: Callable[[str], Awaitable[bool]] | None = None
    #: how fast the store grows (events and bytes, totals and recent rates), for statistics
    #: and health checks (else none)
    storage_growth: Callable[[], StorageGrowth] | None = None
    #: durable timers: appends carrying timer writes, leased claims of due timers (else
    #: handlers cannot schedule, and no timer is delivered)
    timers: TimerStore | None = None
    #: subject keys for personal fields (crypto-shredding): kept, created, destroyed (else
    #: events with personal fields cannot be stored, and ``Runtime.forget`` is refused)
    subject_keys: SubjectKeyStore | None = None
    #: a cluster's tables: members' heartbeats, shard leases with epochs, and appends fenced
    #: by a lease (else ``Runtime(cluster=...)`` is refused on this store)
    cluster: ClusterStore | None = None


@runtime_checkable
class EventStore(Protocol):
    """What the runtime needs from a store: append with a version check, reads, snapshots.

    ``expected_version`` is the version the stream must be at for an append to succeed (``0``
    for a stream with no events) or ``None`` to append wherever the stream is.

    Appends are idempotent: appending events that are already stored, with the same ids, in
    that stream, at the versions this append would give them (the same append, already
    committed: a retry after a lost reply) stores nothing and returns the original result.
    With ``expected_version=None``, "the versions this append would give them" are those
    from the first event's stored version on. Any other reuse of a stored event id is an
    error.
    """

    @property
    def is_open(self) -> bool:
        """Whether the store is open."""
        ...

    async def open(self) -> None:
        """Open the store (create its schema if needed)."""
        ...

    async def close(self) -> None:
        """Finish pending writes and close the store."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def append(
        self, stream_id: str, expected_version: int | None, events: Sequence[NewEvent]
    ) -> AppendResult:
        """Append ``events`` to a stream atomically, durable when this returns.

        If exactly these events were already appended here (see the class docstring), return
        that append's result and store nothing.

        :raises ConcurrencyError: if the stream is not at ``expected_version``
        :raises CodecError: if an event's data or metadata is not JSON-serializable
        :raises StoreError: if the store fails, or an event id is already stored in another
            place or appears twice; nothing of this append is stored then
        """
        ...

    def read_stream(
        self,
        stream_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> AsyncIterator[StoredEvent]:
        """Yield a stream's events in version order, from ``from_version`` to ``to_version``.

        :raises StreamArchivedError: if ``from_version`` is before the first version stored
            (the events before it were archived)
        :raises StreamDeletedError: likewise, when the stream was hard-deleted

        ``since`` (inclusive) and ``until`` (exclusive) keep only events recorded in that time
        range.
        """
        ...

    def read_all(
        self,
        from_position: int = 1,
        *,
        to_position: int | None = None,
        types: Collection[str] | None = None,
        categories: Collection[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> AsyncIterator[StoredEvent]:
        """Yield the store's events in global position (commit) order.

        Positions are in commit order: a reader never sees a position before every lower one
        is committed. They are gap-free until events are archived or streams hard-deleted
        (their positions are then missing). The filters keep only events of the given stored type
        names, of streams of the given categories (``f"{category}-..."`` stream ids), and
        recorded in ``[since, until)``.
        """
        ...

    async def find_command_events(
        self, stream_id: str, command_ids: Collection[str]
    ) -> list[StoredEvent]:
        """Return the events of a stream that commands with these ids produced, in version order.

        An event belongs to the command whose id is its metadata's ``"command_id"`` (the
        runtime stores it with every event). The runtime calls this only for commands sent
        with an explicit id that an actor does not remember, to answer a repeat with the
        original events.

        :raises ValueError: if ``command_ids`` is a bare str or holds a non-str, an empty str
            or a str holding NUL
        """
        ...

    async def stream_version(self, stream_id: str, *, at: datetime | None = None) -> int:
        """Return the version of a stream's last event (``0`` for an empty stream).

        :param at: the version the stream had at that time instead (its last event recorded
            at or before ``at``)
        """
        ...

    async def head_position(self) -> int:
        """Return the global position of the store's last event (``0`` for an empty store)."""
        ...

    async def list_streams(self, category: str | None = None) -> list[StreamInfo]:
        """Return every stream (of ``category``, if given) with its version and last write."""
        ...

    async def wait_for_events(self, after_position: int, timeout: float) -> None:  # noqa: ASYNC109  # the deadline is the contract's
        """Return when an event beyond ``after_position`` may be readable.

        Appends through this store object wake waiters at once (after their commit). Appends by
        other processes wake them too where the store is told of other commits (PostgreSQL's
        LISTEN/NOTIFY); elsewhere they are found by reading again, which callers do when the
        wait times out (use the timeout as a poll interval).

        :raises WaitTimeoutError: after ``timeout`` seconds with no such event seen
        :raises StoreError: if the store is closed (also while waiting)
        """
        ...

    async def load_checkpoint(self, name: str) -> int:
        """Return the position a named reader (a projection) has handled up to (``0``: none)."""
        ...

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Durably record that the reader ``name`` handled every event up to ``position``."""
        ...

    async def list_checkpoints(self) -> dict[str, int]:
        """Return every checkpoint: reader name -> position."""
        ...

    async def load_snapshot(
        self, stream_id: str, max_version: int | None = None
    ) -> SnapshotRecord | None:
        """Return the stream's latest snapshot (at or before ``max_version``), or ``None``.

        A snapshot whose stored state is not JSON (a damaged row) is a cache that cannot be
        read: it is skipped with a warning, and ``None`` returned, so that the caller replays
        the events.
        """
        ...

    async def save_snapshot(self, snapshot: SnapshotRecord, *, keep: int | None = None) -> None:
        """Save a snapshot (a later save for the same version replaces it).

        :param keep: then delete the stream's snapshots but the ``keep`` latest (by version),
            in the same transaction as the save; ``None``: delete none
        :raises ValueError: if ``keep`` is not an int >= 1 or None
        """
        ...

    async def list_snapshots(self, stream_id: str) -> list[SnapshotInfo]:
        """Return the stream's saved snapshots (without their states), oldest version first.

        Load one of them with :meth:`load_snapshot` and ``max_version=info.version``.
        """
        ...

    def capabilities(self) -> StoreCapabilities:
        """Return what this store offers beyond the core contract (see
        :class:`StoreCapabilities`; ``StoreCapabilities()`` for none)."""
        ...


T = TypeVar("T")

#: what a transactional store calls inside its write transaction: ``work(transaction)``; on a
#: store with ``async_transactions`` it may return an awaitable, awaited inside the transaction
TransactionWork = Callable[[Any], T]
#: an inline projection's hook: ``hook(transaction, events)``, inside the append's transaction;
#: on a store with ``async_transactions`` it may return an awaitable, awaited there
InlineHook = Callable[[Any, list[StoredEvent]], Awaitable[None] | None]


@runtime_checkable
class TransactionalStore(EventStore, Protocol):
    """A store that can run read-model writes inside its own transactions.

    What the transaction object is depends on the store:

    - SQLite: the writer's ``sqlite3.Connection``, inside its transaction, on the writer's
      thread (work and hooks are plain functions);
    - PostgreSQL: an ``asyncpg.Connection`` inside a transaction, its ``search_path`` starting
      with the store's schema (work and hooks may be plain or ``async``, run on the loop);
    - in memory: ``None`` (read models live in Python objects, changed in one step of the loop).

    A store declares that it is one in :attr:`StoreCapabilities.transactional`, and whether its
    work may be ``async`` in :attr:`StoreCapabilities.async_transactions`.
    """

    async def commit_with_checkpoint(
        self, name: str, position: int, work: TransactionWork[T], *, expected: int | None = None
    ) -> T:
        """Run ``work(transaction)`` and set checkpoint ``name`` to ``position``, atomically.

        If ``work`` raises, nothing it wrote is kept, the checkpoint is unchanged, and the
        error is raised here.

        :param expected: where the checkpoint must stand for the commit to go ahead (checked
            inside the transaction); ``None``: anywhere
        :raises CheckpointConflictError: if the checkpoint was not at ``expected`` (``work``
            did not run)
        """
        ...

    async def add_inline_projection(self, name: str, hook: InlineHook) -> None:
        """Call ``hook(transaction, events)`` inside every append's transaction.

        First the hook gets every event after checkpoint ``name`` (so that it sees every event
        once, however late it is added); then, in each append's transaction, the appended
        events, and the checkpoint moves with them. If the hook raises, the append fails with
        that error and nothing of it is stored.
        """
        ...

    def remove_inline_projection(self, name: str) -> None:
        """Stop calling the inline projection ``name`` (its checkpoint stays)."""
        ...
