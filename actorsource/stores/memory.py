"""An event store in a Python dict: for tests and experiments, gone when the process ends."""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator, Collection, Sequence
from datetime import datetime

import attrs

from .._errors import (
    ActorsourceError,
    CheckpointConflictError,
    ConcurrencyError,
    StoreError,
)
from .._records import (
    AppendResult,
    NewEvent,
    SnapshotInfo,
    SnapshotRecord,
    StoredEvent,
    StreamInfo,
)
from .._timers import TimerChange
from ._base import (
    Fence,
    GrowthMeter,
    HeadWatch,
    InlineHook,
    MemberRecord,
    ShardLease,
    StorageGrowth,
    StoreCapabilities,
    T,
    TransactionWork,
    before_kept,
    check_append,
    check_checkpoint,
    check_command_ids,
    check_filters,
    check_keep,
    check_snapshot,
    check_stream_id,
    check_time,
    check_timer_append,
    decode_json,
    encode_json,
    encode_snapshot_state,
    matches,
    prior_append,
    retry_start,
    utc_now,
)
from .memory_cluster import MemoryCluster
from .memory_keys import MemorySubjectKeys
from .memory_retention import MemoryRetention
from .memory_rows import _position, _Row
from .memory_timers import MemoryTimers, TimerTable


class InMemoryEventStore(MemoryRetention, MemorySubjectKeys, MemoryCluster, MemoryTimers):
    """An event store held in memory with the same contract as the SQLite store.

    Data and metadata are kept as JSON text, so that what is stored is exactly what a durable
    store would give back and cannot be changed through an object a caller still holds.

    It is a transactional store whose transaction object is ``None``: exactly-once and inline
    projections keep their read models in Python objects, changed with the checkpoint in one
    step of the event loop (a handler that raises half-way leaves its own changes made).
    """

    def __init__(self) -> None:
        #: every stored event in position order (positions have gaps where events were
        #: archived or streams hard-deleted)
        self._log: list[_Row] = []
        #: the position of the last event ever appended (never goes back)
        self._head = 0
        self._streams: dict[str, list[_Row]] = {}
        self._event_ids: set[str] = set()
        self._snapshots: dict[str, dict[int, SnapshotRecord]] = {}
        self._subject_keys: dict[str, bytes | None] = {}
        self._subject_streams: dict[str, set[str]] = {}
        self._checkpoints: dict[str, int] = {}
        self._inline: dict[str, InlineHook] = {}
        self._watch = HeadWatch()
        #: counts what this store commits, for :meth:`storage_growth` (replace it before use
        #: to measure over another window)
        self.growth_meter = GrowthMeter()
        self._timers = TimerTable()
        self._members: dict[tuple[str, str], MemberRecord] = {}
        self._shard_counts: dict[str, int] = {}
        self._leases: dict[tuple[str, int], ShardLease] = {}

    def __repr__(self) -> str:
        return f"InMemoryEventStore(events={len(self._log)})"

    async def _open(self) -> None:
        pass

    async def _close(self) -> None:
        pass

    async def append(
        self, stream_id: str, expected_version: int | None, events: Sequence[NewEvent]
    ) -> AppendResult:
        """Append events atomically (see :class:`EventStore`)."""
        future = self.submit_append(stream_id, expected_version, events)
        # a real checkpoint, as a durable store's append would be
        await asyncio.sleep(0)
        return future.result()

    def submit_append(
        self, stream_id: str, expected_version: int | None, events: Sequence[NewEvent]
    ) -> asyncio.Future[AppendResult]:
        """Append at once; return a future holding the result (or the error).

        Bad arguments raise here, at once, as with the SQLite store.
        """
        self._check_open()
        check_append(stream_id, expected_version, events)
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        try:
            future.set_result(self._append_now(stream_id, expected_version, events))
        except ActorsourceError as exc:
            future.set_exception(exc)
        return future

    def _append_now(
        self, stream_id: str, expected_version: int | None, events: Sequence[NewEvent]
    ) -> AppendResult:
        rows_json = [
            (encode_json(e.data, "data", e), encode_json(e.metadata, "metadata", e)) for e in events
        ]
        stream = self._streams.get(stream_id, [])
        actual = stream[-1].version if stream else 0
        if expected_version is not None and expected_version != actual:
            prior = _prior_append(stream, expected_version, events)
            if prior is not None:
                return prior  # this append was committed before: a retry
            raise ConcurrencyError(stream_id, expected_version, actual)
        seen: set[str] = set()
        for event in events:
            if event.event_id in self._event_ids:
                prior = _prior_append(stream, expected_version, events)
                if prior is not None:
                    return prior
                msg = (
                    f"event id {event.event_id!r} is already stored (appending to {stream_id!r}); "
                    "nothing of this append was stored"
                )
                raise StoreError(msg)
            if event.event_id in seen:
                msg = (
                    f"event id {event.event_id!r} appears twice in one append to {stream_id!r}; "
                    "nothing of this append was stored"
                )
                raise StoreError(msg)
            seen.add(event.event_id)
        recorded_at = utc_now()
        first_position = self._head + 1
        new_rows = [
            _Row(
                stream_id,
                actual + i + 1,
                first_position + i,
                event.type,
                data,
                metadata,
                event.event_id,
                recorded_at,
            )
            for i, (event, (data, metadata)) in enumerate(zip(events, rows_json, strict=True))
        ]
        if self._inline:
            self._run_inline(new_rows)
        self._log.extend(new_rows)
        self._streams.setdefault(stream_id, []).extend(new_rows)
        self._event_ids.update(seen)
        self.growth_meter.record(len(rows_json), sum(len(d) + len(m) for d, m in rows_json))
        self._head = new_rows[-1].position
        self._watch.advance(self._head)
        return AppendResult(actual + len(events), first_position, recorded_at)

    async def append_with_timers(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        timers: Sequence[TimerChange],
    ) -> AppendResult:
        """Append events and apply timer writes in one step (see :class:`TimerStore`)."""
        return await self._append_with_timers(stream_id, expected_version, events, timers, None)

    async def _append_with_timers(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        timers: Sequence[TimerChange],
        fence: Fence | None,
    ) -> AppendResult:
        self._check_open()
        check_timer_append(stream_id, expected_version, events, timers)
        await asyncio.sleep(0)  # a real checkpoint, as a durable store's append would be
        self._check_open()
        if fence is not None:  # checked in the same step as the append, after the checkpoint
            self._check_fence(stream_id, fence)
        if events:
            result = self._append_now(stream_id, expected_version, events)
        else:
            actual = len(self._streams.get(stream_id, ()))
            if actual != expected_version:
                raise ConcurrencyError(stream_id, expected_version, actual)
            result = AppendResult(actual, len(self._log) + 1, utc_now())
        self._timers.apply(timers)
        return result

    def _run_inline(self, new_rows: list[_Row]) -> None:
        """Call the inline projections with what they have not seen; raise to refuse the append."""
        last = new_rows[-1].position
        for name, hook in list(self._inline.items()):
            done = self._checkpoints.get(name, 0)
            unseen = [*self._after(done), *(r for r in new_rows if r.position > done)]
            if not unseen:
                continue
            try:
                hook(None, [_stored(row) for row in unseen])
            except ActorsourceError:
                raise
            except Exception as exc:
                msg = f"inline projection {name!r} failed: {type(exc).__name__}: {exc}"
                raise StoreError(msg) from exc
        for name in self._inline:
            self._checkpoints[name] = last

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
        self._check_open()
        check_stream_id(stream_id)
        since, until = check_time("since", since), check_time("until", until)
        rows = self._streams.get(stream_id, [])
        offset = rows[0].version - 1 if rows else 0
        start = max(from_version, 1)
        if start <= offset and (to_version is None or to_version >= start):
            raise _before_kept(stream_id, rows[0])
        # a negative end would slice from the back of the list
        end = len(rows) if to_version is None else max(min(to_version - offset, len(rows)), 0)
        for row in rows[start - offset - 1 : end]:
            if _in_range(row.recorded_at, since, until):
                yield _stored(row)

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
        """Yield the store's events in global order (see :class:`EventStore`)."""
        self._check_open()
        type_names, prefixes = check_filters(types, categories)
        since, until = check_time("since", since), check_time("until", until)
        log = self._log
        index = bisect.bisect_left(log, max(from_position, 1), key=_position)
        while index < len(log) and (to_position is None or log[index].position <= to_position):
            row = log[index]
            index += 1
            if matches(row.type, row.stream_id, type_names, prefixes) and _in_range(
                row.recorded_at, since, until
            ):
                yield _stored(row)

    async def find_command_events(
        self, stream_id: str, command_ids: Collection[str]
    ) -> list[StoredEvent]:
        """Return the events that commands with these ids produced (see :class:`EventStore`)."""
        self._check_open()
        check_stream_id(stream_id)
        wanted = set(check_command_ids(command_ids))
        found = [
            _stored(row)
            for row in self._streams.get(stream_id, [])
            if decode_json(row.metadata).get("command_id") in wanted
        ]
        await asyncio.sleep(0)  # a real checkpoint, as a durable store's read would be
        return found

    async def stream_version(self, stream_id: str, *, at: datetime | None = None) -> int:
        """Return the version of a stream's last event (see :class:`EventStore`)."""
        self._check_open()
        rows = self._streams.get(check_stream_id(stream_id), [])
        moment = check_time("at", at)
        if moment is None:
            return rows[-1].version if rows else 0
        return max((r.version for r in rows if r.recorded_at <= moment), default=0)

    async def list_streams(self, category: str | None = None) -> list[StreamInfo]:
        """Return the streams with their versions (see :class:`EventStore`)."""
        self._check_open()
        prefix = None if category is None else f"{category}-"
        return [
            StreamInfo(stream_id, rows[-1].version, rows[-1].recorded_at)
            for stream_id, rows in sorted(self._streams.items())
            if prefix is None or stream_id.startswith(prefix)
        ]

    def capabilities(self) -> StoreCapabilities:
        """Future appends, the writer's lag (always 0), read models changed with their
        checkpoints in one step (``ctx.transaction`` is ``None``), subject keys, archiving and
        deleting streams, the storage growth, timers, and a cluster's tables (runtimes in one
        process sharing this store)."""
        return StoreCapabilities(
            submit_append=self.submit_append,
            writer_lag=self.writer_lag,
            transactional=self,
            transactions_roll_back=False,
            archive_stream=self.archive_stream,
            delete_stream=self.delete_stream,
            delete_checkpoint=self.delete_checkpoint,
            storage_growth=self.storage_growth,
            timers=self,
            subject_keys=self,
            cluster=self,
        )

    def storage_growth(self) -> StorageGrowth:
        """Return how fast this store grows (see :class:`StorageGrowth`)."""
        self._check_open()
        return self.growth_meter.growth()

    def _after(self, position: int) -> list[_Row]:
        """The stored events after ``position``."""
        return self._log[bisect.bisect_right(self._log, position, key=_position) :]

    def writer_lag(self) -> float:
        """Return 0: appends are applied at once (see ``SQLiteEventStore.writer_lag``)."""
        self._check_open()
        return 0.0

    async def head_position(self) -> int:
        """Return the position of the last event (see :class:`EventStore`)."""
        self._check_open()
        return self._head

    async def wait_for_events(self, after_position: int, timeout: float) -> None:  # noqa: ASYNC109  # a poll interval
        """Return when an event beyond ``after_position`` is stored, or after ``timeout``."""
        self._check_open()
        await self._watch.wait_beyond(after_position, timeout)

    async def load_checkpoint(self, name: str) -> int:
        """Return the checkpoint ``name`` (see :class:`EventStore`)."""
        self._check_open()
        return self._checkpoints.get(check_checkpoint(name), 0)

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Save the checkpoint ``name`` (see :class:`EventStore`)."""
        self._check_open()
        self._checkpoints[check_checkpoint(name, position)] = position

    async def delete_checkpoint(self, name: str) -> bool:
        """Remove checkpoint ``name``; return whether there was one."""
        self._check_open()
        return self._checkpoints.pop(check_checkpoint(name), None) is not None

    async def list_checkpoints(self) -> dict[str, int]:
        """Return every checkpoint (see :class:`EventStore`)."""
        self._check_open()
        return dict(sorted(self._checkpoints.items()))

    async def commit_with_checkpoint(
        self, name: str, position: int, work: TransactionWork[T], *, expected: int | None = None
    ) -> T:
        """Run ``work(None)`` and set the checkpoint in one step (see TransactionalStore)."""
        self._check_open()
        check_checkpoint(name, position)
        if expected is not None:
            check_checkpoint(name, expected)
            actual = self._checkpoints.get(name, 0)
            if actual != expected:
                raise CheckpointConflictError(name, expected, actual)
        result = work(None)  # no await in between: nothing can come between the two
        self._checkpoints[name] = position
        await asyncio.sleep(0)
        return result

    async def add_inline_projection(self, name: str, hook: InlineHook) -> None:
        """Call ``hook`` inside every append, after feeding it what it missed (see
        TransactionalStore)."""
        self._check_open()
        check_checkpoint(name)
        done = self._checkpoints.get(name, 0)
        unseen = self._after(done)
        if unseen:
            hook(None, [_stored(row) for row in unseen])
            self._checkpoints[name] = unseen[-1].position
        self._inline[name] = hook
        await asyncio.sleep(0)

    def remove_inline_projection(self, name: str) -> None:
        """Stop calling the inline projection ``name`` (see TransactionalStore)."""
        self._inline.pop(name, None)

    async def load_snapshot(
        self, stream_id: str, max_version: int | None = None
    ) -> SnapshotRecord | None:
        """Return the latest snapshot at or before ``max_version`` (see :class:`EventStore`)."""
        self._check_open()
        by_version = self._snapshots.get(check_stream_id(stream_id), {})
        versions = [v for v in by_version if max_version is None or v <= max_version]
        if not versions:
            return None
        found = by_version[max(versions)]
        return attrs.evolve(found, state=decode_json(encode_snapshot_state(found)))

    async def save_snapshot(self, snapshot: SnapshotRecord, *, keep: int | None = None) -> None:
        """Save a snapshot, keeping the ``keep`` latest (see :class:`EventStore`)."""
        self._check_open()
        check_snapshot(snapshot)
        check_keep(keep)
        stored = attrs.evolve(
            snapshot, state=decode_json(encode_snapshot_state(snapshot)), recorded_at=utc_now()
        )
        by_version = self._snapshots.setdefault(snapshot.stream_id, {})
        by_version[snapshot.version] = stored
        if keep is not None and len(by_version) > keep:
            for version in sorted(by_version)[:-keep]:
                del by_version[version]

    async def list_snapshots(self, stream_id: str) -> list[SnapshotInfo]:
        """Return the stream's snapshots, oldest version first (see :class:`EventStore`)."""
        self._check_open()
        by_version = self._snapshots.get(check_stream_id(stream_id), {})
        return [
            SnapshotInfo(s.stream_id, s.version, s.schema_version, s.recorded_at or utc_now())
            for _, s in sorted(by_version.items())
        ]


def _prior_append(
    stream: list[_Row], expected_version: int | None, events: Sequence[NewEvent]
) -> AppendResult | None:
    """The result of an earlier append of exactly these events at these versions, if any (see
    :func:`prior_append`)."""
    ids = [event.event_id for event in events]
    found = None
    if expected_version is None:
        found = next((row.version for row in stream if row.event_id == ids[0]), None)
    start = retry_start(expected_version, found, len(ids))
    offset = stream[0].version - 1 if stream else 0  # versions before it were archived
    if start is None or start < offset:
        return None
    stored = [
        (row.event_id, row.position, row.recorded_at)
        for row in stream[start - offset : start - offset + len(ids)]
    ]
    prior = prior_append(ids, start, stored)
    return None if prior is None else AppendResult(*prior)


def _before_kept(stream_id: str, first: _Row) -> Exception:
    """The error for a read of a stream before its first stored event."""
    return before_kept(stream_id, first.version, first.type, decode_json(first.data))


def _in_range(moment: datetime, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or moment >= since) and (until is None or moment < until)


def _stored(row: _Row) -> StoredEvent:
    return StoredEvent(
        row.stream_id,
        row.version,
        row.position,
        row.type,
        decode_json(row.data),
        decode_json(row.metadata),
        row.event_id,
        row.recorded_at,
    )
