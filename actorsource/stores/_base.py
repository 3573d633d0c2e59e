"""The event store contract, and the lifecycle and JSON handling every store shares."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Protocol, Self, TypeVar, runtime_checkable

import attrs
import orjson

from .._errors import CodecError, StoreError, WaitTimeoutError
from .._records import (
    AppendResult,
    JSONDict,
    NewEvent,
    SnapshotRecord,
    StoredEvent,
    StreamInfo,
)

logger = logging.getLogger("actorsource.stores")


#: what an append reports when it is done: its result, or why it failed
AppendCallback = Callable[[AppendResult | BaseException], None]
#: an activation's read: the latest snapshot, the first page of (version, type, data) after it,
#: and whether that page is all of the stream after the snapshot
Latest = tuple[SnapshotRecord | None, list[tuple[int, str, JSONDict]], bool]


@attrs.frozen(slots=True)
class StoreCapabilities:
    """What a store offers beyond the core contract, declared by the store itself.

    The runtime asks once (:meth:`EventStore.capabilities`) and uses each one the store has;
    where one is ``None`` it uses the core method named beside it. No capability changes what
    is stored: they are faster routes to the same results.
    """

    #: a non-async append that calls back on the loop at commit, with no future (else
    #: ``submit_append``, else ``append``)
    append_then: Callable[[str, int | None, Sequence[NewEvent], AppendCallback], None] | None = (
        None
    )
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

        Positions are gap-free and in commit order: a reader never sees a position before
        every lower one is committed. The filters keep only events of the given stored type
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

    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        """Save a snapshot (a later save for the same version replaces it)."""
        ...

    def capabilities(self) -> StoreCapabilities:
        """Return what this store offers beyond the core contract (see
        :class:`StoreCapabilities`; ``StoreCapabilities()`` for none)."""
        ...


T = TypeVar("T")

#: what a transactional store calls inside its write transaction: ``work(transaction)``
TransactionWork = Callable[[Any], T]
#: an inline projection's hook: ``hook(transaction, events)``, inside the append's transaction
InlineHook = Callable[[Any, list[StoredEvent]], None]


@runtime_checkable
class TransactionalStore(EventStore, Protocol):
    """A store that can run read-model writes inside its own transactions.

    What the transaction object is depends on the store: a ``sqlite3.Connection`` (on the
    store's writer thread) for SQLite, ``None`` for the in-memory store (whose read models live
    in Python objects, changed in one step of the event loop).
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


class HeadWatch:
    """The newest position a store committed, and waiters for a newer one.

    Stores advance it after each commit, so that in-process subscribers wake at once instead
    of polling.
    """

    __slots__ = ("_closed", "_waiters", "head")

    def __init__(self) -> None:
        #: the highest position known to be committed
        self.head = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._closed: StoreError | None = None

    def advance(self, head: int) -> None:
        """Record that ``head`` is committed and wake every waiter if it is new."""
        if head <= self.head:
            return
        self.head = head
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def close(self, error: StoreError) -> None:
        """Fail every waiter, and every later wait, with ``error`` (the store closed)."""
        self._closed = error
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)

    async def wait_beyond(self, position: int, timeout: float) -> None:  # noqa: ASYNC109  # the deadline is the contract's
        """Return when the head passes ``position``.

        :raises WaitTimeoutError: after ``timeout`` seconds
        :raises StoreError: when the store closes (given to :meth:`close`)
        """
        if self.head > position:
            return
        if self._closed is not None:
            raise self._closed
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                waiter.result()  # woken (or closed) as the time ran out: that counts
                return
            raise WaitTimeoutError(
                "the store's log",
                target=position + 1,
                reached=self.head,
                timeout=timeout,
                detail=" (the newest commit this store object has seen)",
            ) from None
        finally:
            if not waiter.done():
                waiter.cancel()
                if waiter in self._waiters:
                    self._waiters.remove(waiter)


async def poll_for_events(store: EventStore, after_position: int, interval: float) -> None:
    """Wait up to ``interval`` seconds for an event beyond ``after_position`` (then read again).

    For readers that poll: a timeout is their next round, not an error.
    """
    with contextlib.suppress(WaitTimeoutError):
        await store.wait_for_events(after_position, interval)


class StoreState(enum.Enum):
    """The lifecycle of a store; it can be opened once."""

    #: made but not opened yet
    UNOPENED = "unopened"
    #: open and usable
    OPEN = "open"
    #: closed; a store cannot be reopened
    CLOSED = "closed"


class StoreLifecycle:
    """Open/close bookkeeping and the async context manager, shared by the stores."""

    _state: StoreState = StoreState.UNOPENED
    #: the newest commit seen, and its waiters (every store keeps one; closing fails waiters)
    _watch: HeadWatch

    @property
    def is_open(self) -> bool:
        """Whether the store is open."""
        return self._state is StoreState.OPEN

    async def open(self) -> None:
        """Open the store; opening an open store is a no-op.

        :raises StoreError: if the store was closed (stores cannot be reopened) or fails to open
        """
        if self._state is StoreState.OPEN:
            return
        if self._state is StoreState.CLOSED:
            msg = f"{self!r} was closed; a store cannot be reopened, make a new one"
            raise StoreError(msg)
        await self._open()
        self._state = StoreState.OPEN

    async def close(self) -> None:
        """Close the store; closing a closed store is a no-op."""
        if self._state is not StoreState.OPEN:
            self._state = StoreState.CLOSED
            return
        self._state = StoreState.CLOSED
        self._watch.close(StoreError(f"{self!r} was closed while waiting for events"))
        await self._close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._state is StoreState.OPEN:
            return
        if self._state is StoreState.CLOSED:
            msg = f"{self!r} was closed; a store cannot be reopened, make a new one"
        else:
            msg = f"{self!r} is unopened; open it first (async with store: ...)"
        raise StoreError(msg)

    async def _open(self) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError


#: the largest version or position a store can hold (SQLite and Postgres hold signed 64 bits)
MAX_VERSION: Final = 2**63 - 1


def check_stream_id(stream_id: object) -> str:
    """Return ``stream_id`` if it is a non-empty str, else raise a ValueError naming it."""
    if type(stream_id) is str and stream_id and stream_id.isascii():
        return stream_id  # almost every id: spare the calls below
    if not isinstance(stream_id, str) or not stream_id:
        msg = f"a stream id must be a non-empty str, got {stream_id!r}"
        raise ValueError(msg)
    if not _is_utf8(stream_id):
        # caught here: in a SQLite batch it would fail the other appends of the batch too
        msg = f"a stream id must be valid Unicode (no lone surrogates), got {stream_id!r}"
        raise ValueError(msg)
    return stream_id


def check_append(stream_id: str, expected_version: int | None, events: Sequence[NewEvent]) -> None:
    """Raise a ValueError naming what is wrong with the arguments of an append."""
    check_stream_id(stream_id)
    if expected_version is not None and (
        not isinstance(expected_version, int)
        or isinstance(expected_version, bool)
        or expected_version < 0
    ):
        msg = (
            f"expected_version of an append to {stream_id!r} must be an int >= 0 or None, "
            f"got {expected_version!r}"
        )
        raise ValueError(msg)
    if not events:
        msg = f"an append to {stream_id!r} needs at least one event"
        raise ValueError(msg)
    for event in events:
        event_id, type_name = event.event_id, event.type
        if (
            type(event_id) is str
            and type(type_name) is str
            and event_id
            and type_name
            and event_id.isascii()
            and type_name.isascii()
        ):
            continue  # almost every event: spare the checks below
        for field, value in (("event_id", event_id), ("type", type_name)):
            if not isinstance(value, str) or not value or not _is_utf8(value):
                msg = (
                    f"the {field} of an event appended to {stream_id!r} must be a non-empty str "
                    f"of valid Unicode, got {value!r}"
                )
                raise ValueError(msg)


def check_checkpoint(name: object, position: object = 0) -> str:
    """Return a checkpoint ``name`` if it and ``position`` are valid, else raise a ValueError.

    A name is what every store can hold and find again exactly: a non-empty str of valid
    Unicode without NUL (PostgreSQL's text cannot hold NUL).
    """
    if not isinstance(name, str) or not name or not _is_utf8(name) or "\x00" in name:
        msg = (
            "a checkpoint name (a projection's name) must be a non-empty str of valid Unicode "
            f"without NUL, got {name!r}"
        )
        raise ValueError(msg)
    if not _is_int(position) or not 0 <= position <= MAX_VERSION:  # type: ignore[operator]
        msg = (
            f"checkpoint {name!r}: a position must be an int from 0 to {MAX_VERSION}, "
            f"got {position!r}"
        )
        raise ValueError(msg)
    return name


def check_filters(
    types: Collection[str] | None, categories: Collection[str] | None
) -> tuple[frozenset[str] | None, tuple[str, ...] | None]:
    """Return the type names and stream-id prefixes ``read_all`` filters by (``None``: all).

    :raises ValueError: if a filter is a bare str (a common slip for ``[str]``) or holds a
        non-str
    """
    found: list[Any] = []
    for what, given in (("types", types), ("categories", categories)):
        if given is None:
            found.append(None)
            continue
        if isinstance(given, str):
            msg = f"read_all {what} must be a collection of str, got the str {given!r}"
            raise ValueError(msg)
        items = list(given)
        bad = [item for item in items if not isinstance(item, str) or not item]
        if bad:
            msg = f"read_all {what} must be non-empty strs, got {bad[0]!r}"
            raise ValueError(msg)
        found.append(items)
    type_names, category_names = found
    return (
        None if type_names is None else frozenset(type_names),
        None if category_names is None else tuple(f"{c}-" for c in category_names),
    )


def check_command_ids(command_ids: Collection[str]) -> list[str]:
    """Return the command ids ``find_command_events`` looks for, sorted, without repeats.

    :raises ValueError: if ``command_ids`` is a bare str (a common slip for ``[str]``) or holds
        a non-str, an empty str, a str that is not valid Unicode or one holding NUL (which
        no store can look up exactly: PostgreSQL's text refuses it, SQLite's JSON functions
        do not match it)
    """
    if isinstance(command_ids, str):
        msg = f"command_ids must be a collection of str, got the str {command_ids!r}"
        raise ValueError(msg)
    ids = set(command_ids)
    for command_id in ids:
        if (
            not isinstance(command_id, str)
            or not command_id
            or not _is_utf8(command_id)
            or "\x00" in command_id
        ):
            msg = (
                "command ids must be non-empty strs of valid Unicode without NUL, "
                f"got {command_id!r}"
            )
            raise ValueError(msg)
    return sorted(ids)


def matches(
    stored_type: str,
    stream_id: str,
    types: frozenset[str] | None,
    prefixes: tuple[str, ...] | None,
) -> bool:
    """Whether an event passes ``read_all``'s type and category filters."""
    if types is not None and stored_type not in types:
        return False
    return prefixes is None or stream_id.startswith(prefixes)


def check_time(what: str, value: datetime | None) -> datetime | None:
    """Return ``value`` in UTC; a naive datetime is refused (its time zone would be a guess)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        msg = f"{what} must be a datetime, got {value!r}"
        raise ValueError(msg)
    if value.tzinfo is None:
        msg = (
            f"{what} must be a timezone-aware datetime (for example datetime.now(UTC)), "
            f"got {value!r}"
        )
        raise ValueError(msg)
    return value.astimezone(UTC)


def check_snapshot(snapshot: SnapshotRecord) -> None:
    """Raise a ValueError naming what is wrong with a snapshot to save."""
    check_stream_id(snapshot.stream_id)
    for field, value in (
        ("version", snapshot.version),
        ("schema_version", snapshot.schema_version),
    ):
        if not _is_int(value) or not 0 <= value <= MAX_VERSION:
            msg = (
                f"the {field} of a snapshot of {snapshot.stream_id!r} must be an int from 0 "
                f"to {MAX_VERSION}, got {value!r}"
            )
            raise ValueError(msg)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def encode_json(value: JSONDict, what: str, event: NewEvent) -> str:
    """Return ``value`` as JSON text; a value JSON cannot hold raises a CodecError naming it."""
    if not value and type(value) is dict:
        return "{}"  # most metadata: spare the call
    try:
        text = orjson.dumps(value).decode()
    except TypeError as exc:
        msg = f"the {what} of event {event.type} ({event.event_id}) is not JSON-serializable: {exc}"
        raise CodecError(msg, type_name=event.type) from exc
    # orjson writes NaN and infinities as null; refuse them rather than change the data (the
    # search is on the str: on bytes it costs several times as much here, 300 ns an event)
    if "null" in text and _has_non_finite_float(value):
        msg = (
            f"the {what} of event {event.type} ({event.event_id}) holds NaN or an infinity, "
            "which JSON cannot hold (it would be stored as null)"
        )
        raise CodecError(msg, type_name=event.type)
    return text


def stored_event(row: Any, recorded_at: datetime) -> StoredEvent:
    """The event of a row selected as ``stream_id, version, position, type, data, metadata,
    event_id, ...`` (data and metadata as stored JSON text; the commit time given by the
    caller, as each store keeps it its own way).

    :raises CodecError: if the row's data or metadata is not JSON (a damaged row), naming it
    """
    try:
        data = orjson.loads(row[4])
    except orjson.JSONDecodeError as exc:
        raise damaged_event(row, "data", exc) from exc
    try:
        metadata = orjson.loads(row[5])
    except orjson.JSONDecodeError as exc:
        raise damaged_event(row, "metadata", exc) from exc
    return StoredEvent(row[0], row[1], row[2], row[3], data, metadata, row[6], recorded_at)


def event_data(
    stream_id: str, rows: Sequence[Any], first: int = 0
) -> list[tuple[int, str, JSONDict]]:
    """``(version, type, data)`` of a stream's rows selected as ``version, type, data,
    position`` from column ``first`` on (data as stored JSON text): what replaying needs.

    :raises CodecError: if a row's data is not JSON (a damaged row), naming it
    """
    kind, data = first + 1, first + 2
    try:
        return [(row[first], row[kind], orjson.loads(row[data])) for row in rows]
    except orjson.JSONDecodeError:
        for row in rows:  # which row (rare: it fails anyway)
            event_data_of(stream_id, row[first : first + 4])
        raise


def event_data_of(stream_id: str, row: Any) -> JSONDict:
    """The data of one row selected as in :func:`event_data`.

    :raises CodecError: if the row's data is not JSON (a damaged row), naming it
    """
    try:
        data: JSONDict = orjson.loads(row[2])
    except orjson.JSONDecodeError as exc:
        raise damaged_event((stream_id, row[0], row[3], row[1]), "data", exc) from exc
    return data


def damaged_event(row: Any, what: str, error: Exception) -> CodecError:
    """The error for a stored event whose ``what`` (data or metadata) is not JSON; ``row``
    starts ``stream_id, version, position, type``."""
    stream_id, version, position, type_name = row[0], row[1], row[2], row[3]
    msg = (
        f"event {type_name} at version {version} of stream {stream_id!r} (position {position}) "
        f"cannot be read: its stored {what} is not valid JSON ({error}); the row is damaged, "
        "restore it from a backup"
    )
    return CodecError(
        msg, type_name=type_name, stream_id=stream_id, version=version, position=position
    )


def snapshot_record(
    stream_id: str,
    version: int,
    state: str | bytes,
    schema_version: int,
    recorded_at: datetime | None,
) -> SnapshotRecord | None:
    """The snapshot of a stored row (its state as JSON text), or None if the text is not JSON.

    A snapshot is a cache of what the stream's events give: one that cannot be read (a
    damaged row) is skipped with a warning, and the caller replays the events instead.
    """
    try:
        value = orjson.loads(state)
    except orjson.JSONDecodeError as exc:
        logger.warning(
            "snapshot of stream %r at version %d cannot be read: its stored state is not valid "
            "JSON (%s); ignoring it, the stream's events are replayed instead",
            stream_id,
            version,
            exc,
            extra={"stream_id": stream_id, "version": version, "error": str(exc)},
        )
        return None
    return SnapshotRecord(stream_id, version, value, schema_version, recorded_at)


def encode_snapshot_state(snapshot: SnapshotRecord) -> str:
    """Return a snapshot's state as JSON text; a state JSON cannot hold raises a CodecError."""
    try:
        text = orjson.dumps(snapshot.state).decode()
    except TypeError as exc:
        msg = f"the snapshot state of {snapshot.stream_id!r} is not JSON-serializable: {exc}"
        raise CodecError(msg) from exc
    if "null" in text and _has_non_finite_float(snapshot.state):
        msg = (
            f"the snapshot state of {snapshot.stream_id!r} holds NaN or an infinity, which JSON "
            "cannot hold (it would be stored as null)"
        )
        raise CodecError(msg)
    return text


def _has_non_finite_float(value: object) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite_float(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite_float(v) for v in value)
    return False


def decode_json(text: str | bytes) -> Any:
    """Return the value of JSON text written by :func:`encode_json`."""
    return orjson.loads(text)


def utc_now() -> datetime:
    """Return the current time in UTC (stores stamp commits with it)."""
    return datetime.now(UTC)
