"""The SQLite reader: reads and activation loads on a connection of their own (a WAL reader),
off the write path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Collection
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from ..._errors import (
    StoreError,
)
from ..._records import (
    JSONDict,
    SnapshotInfo,
    SnapshotRecord,
    StoredEvent,
    StreamInfo,
)
from .._base import (
    MAX_VERSION,
    Latest,
    StoreLifecycle,
    check_checkpoint,
    check_command_ids,
    check_filters,
    check_stream_id,
    check_time,
    event_data,
    event_data_of,
    snapshot_record,
    stored_event,
    utc_now,
)
from ._thread import ConnectionThread
from .latest import _EVENTS_PER_LOAD_IN_JOB, _latest, _latest_many
from .retention import _FIRST, refuse_before
from .schema import _COLUMNS, _STREAM_HEAD, _STREAM_HEAD_AT, CHECKPOINTS_SINCE

logger = logging.getLogger("actorsource.stores.sqlite")


#: activation loads one job on the reader's thread takes at most (later ones wait for the next)
_LOADS_PER_JOB: Final = 256

#: command ids per lookup query (SQLite binds at most 32,766 parameters, older builds 999)
_IDS_PER_LOOKUP: Final = 500

#: what load_latest returns: the latest snapshot, the first page of (version, type, data) after
#: it, and whether that page is all
_OnLoaded = Callable[[Latest | BaseException], None]


class SQLiteReads(StoreLifecycle):
    """The read side of :class:`SQLiteEventStore`: reads, and activation loads coalesced into
    jobs on the reader's thread."""

    path: Path

    def _init_reads(self, read_page_size: int) -> None:
        self.read_page_size = read_page_size
        #: the open file's schema version (set by opening)
        self._schema_version = 0
        self._reader: ConnectionThread | None = None
        self._time_cache: tuple[str, datetime] = ("", utc_now())
        #: activation loads waiting for the reader (see _start_loads), and whether one runs
        self._loads: list[tuple[str, _OnLoaded]] = []
        self._loading = False

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
        first = True
        async for event in self._read_pages(
            sql, (stream_id,), version, (last, *time_params), key=1
        ):
            if first:
                first = False
                if event.version != version:  # archived before, or a time range
                    await self._refuse_before(stream_id, version)
            yield event
        if first:
            await self._refuse_before(stream_id, version)

    async def _refuse_before(self, stream_id: str, version: int) -> None:
        """Raise if the stream's stored events start after ``version`` (archived before it)."""
        rows = await self._fetch(_FIRST, (stream_id,))
        refuse_before(stream_id, version, rows[0] if rows else None)

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
        if self._schema_version < CHECKPOINTS_SINCE:  # an older file, opened read-only
            check_checkpoint(name)
            return 0
        rows = await self._fetch(
            "SELECT position FROM checkpoints WHERE name = ?", (check_checkpoint(name),)
        )
        return int(rows[0][0]) if rows else 0

    async def list_checkpoints(self) -> dict[str, int]:
        """Return every checkpoint (see :class:`EventStore`)."""
        if self._schema_version < CHECKPOINTS_SINCE:  # an older file, opened read-only
            self._check_open()
            return {}
        rows = await self._fetch("SELECT name, position FROM checkpoints ORDER BY name", ())
        return {name: position for name, position in rows}

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

    async def list_snapshots(self, stream_id: str) -> list[SnapshotInfo]:
        """Return the stream's snapshots, oldest version first (see :class:`EventStore`)."""
        rows = await self._fetch(
            "SELECT version, schema_version, recorded_at FROM snapshots "
            "WHERE stream_id = ? ORDER BY version",
            (check_stream_id(stream_id),),
        )
        return [
            SnapshotInfo(stream_id, version, schema_version, self._time(recorded_at))
            for version, schema_version, recorded_at in rows
        ]

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
