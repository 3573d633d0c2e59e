"""The event store contract, and the lifecycle and JSON handling every store shares."""

from __future__ import annotations

import enum
import math
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Protocol, Self, runtime_checkable

import orjson

from .._errors import CodecError, StoreError
from .._records import AppendResult, JSONDict, NewEvent, SnapshotRecord, StoredEvent


@runtime_checkable
class EventStore(Protocol):
    """What the runtime needs from a store: append with a version check, reads, snapshots.

    ``expected_version`` is the version the stream must be at for an append to succeed (``0``
    for a stream with no events) or ``None`` to append wherever the stream is.
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

        :raises ConcurrencyError: if the stream is not at ``expected_version``
        :raises CodecError: if an event's data or metadata is not JSON-serializable
        :raises StoreError: if the store fails; nothing of this append is stored then
        """
        ...

    def read_stream(
        self, stream_id: str, from_version: int = 1, to_version: int | None = None
    ) -> AsyncIterator[StoredEvent]:
        """Yield a stream's events in version order, from ``from_version`` to ``to_version``."""
        ...

    def read_all(self, from_position: int = 1) -> AsyncIterator[StoredEvent]:
        """Yield every event of the store in global position (commit) order."""
        ...

    async def stream_version(self, stream_id: str) -> int:
        """Return the version of a stream's last event (``0`` for an empty stream)."""
        ...

    async def load_snapshot(
        self, stream_id: str, max_version: int | None = None
    ) -> SnapshotRecord | None:
        """Return the stream's latest snapshot (at or before ``max_version``), or ``None``."""
        ...

    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        """Save a snapshot (a later save for the same version replaces it)."""
        ...


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
        for field, value in (("event_id", event.event_id), ("type", event.type)):
            if not isinstance(value, str) or not value or not _is_utf8(value):
                msg = (
                    f"the {field} of an event appended to {stream_id!r} must be a non-empty str "
                    f"of valid Unicode, got {value!r}"
                )
                raise ValueError(msg)


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
        text = orjson.dumps(value)
    except TypeError as exc:
        msg = f"the {what} of event {event.type} ({event.event_id}) is not JSON-serializable: {exc}"
        raise CodecError(msg, type_name=event.type) from exc
    # orjson writes NaN and infinities as null; refuse them rather than change the data
    if b"null" in text and _has_non_finite_float(value):
        msg = (
            f"the {what} of event {event.type} ({event.event_id}) holds NaN or an infinity, "
            "which JSON cannot hold (it would be stored as null)"
        )
        raise CodecError(msg, type_name=event.type)
    return text.decode()


def encode_snapshot_state(snapshot: SnapshotRecord) -> str:
    """Return a snapshot's state as JSON text; a state JSON cannot hold raises a CodecError."""
    try:
        text = orjson.dumps(snapshot.state)
    except TypeError as exc:
        msg = f"the snapshot state of {snapshot.stream_id!r} is not JSON-serializable: {exc}"
        raise CodecError(msg) from exc
    if b"null" in text and _has_non_finite_float(snapshot.state):
        msg = (
            f"the snapshot state of {snapshot.stream_id!r} holds NaN or an infinity, which JSON "
            "cannot hold (it would be stored as null)"
        )
        raise CodecError(msg)
    return text.decode()


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
