"""PostgreSQL reads: through the pool, in pages by key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from datetime import datetime
from typing import Any

from ..._errors import StoreError
from ..._records import JSONDict, SnapshotInfo, SnapshotRecord, StoredEvent, StreamInfo
from .._base import (
    MAX_VERSION,
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
)
from .connection import _Pool
from .plan import _check_no_nul
from .schema import _Statements


class PostgresReads(StoreLifecycle):
    """The read side of :class:`PostgresEventStore`."""

    # set by the store
    read_page_size: int
    _errors: tuple[type[BaseException], ...]
    _pool: _Pool | None
    _sql: _Statements
    _where: str
    read_only: bool

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
        _check_no_nul("a stream id", stream_id)
        start, end = check_time("since", since), check_time("until", until)
        last = MAX_VERSION if to_version is None else min(to_version, MAX_VERSION)
        version = max(from_version, 1)
        if version > last:
            return
        where = "stream_id = $1 AND version >= $2 AND version <= $3"
        params: list[Any] = [stream_id, version, last]
        where += _time_range(start, end, params)
        sql = (
            f"SELECT {self._sql.columns} FROM {self._sql.events} WHERE {where} "
            "ORDER BY version LIMIT "
        )
        first = True
        async for row in self._pages(sql, params, 1, key=1):
            if first:
                first = False
                if row[1] != version:  # archived before, or a time range
                    await self._refuse_before(stream_id, version)
            yield stored_event(row, row[7])
        if first:
            await self._refuse_before(stream_id, version)

    async def _refuse_before(self, stream_id: str, version: int) -> None:
        raise NotImplementedError  # the store's (PostgresRetention)

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
        start, end = check_time("since", since), check_time("until", until)
        position = max(from_position, 1)
        last = MAX_VERSION if to_position is None else min(to_position, MAX_VERSION)
        if position > last:
            return
        where = "position >= $1 AND position <= $2"
        params: list[Any] = [position, last]
        where += _time_range(start, end, params)
        if type_names is not None:
            if not type_names:
                return
            for name in type_names:
                _check_no_nul("a type name", name)
            params.append(sorted(type_names))
            where += f" AND type = ANY(${len(params)}::text[])"
        if prefixes is not None:
            if not prefixes:
                return
            for prefix in prefixes:
                _check_no_nul("a category", prefix)
            params.append(list(prefixes))
            where += f" AND stream_id ^@ ANY(${len(params)}::text[])"
        sql = (
            f"SELECT {self._sql.columns} FROM {self._sql.events} WHERE {where} "
            "ORDER BY position LIMIT "
        )
        async for row in self._pages(sql, params, 0, key=2):
            yield stored_event(row, row[7])

    async def read_stream_data(
        self, stream_id: str, from_version: int = 1
    ) -> AsyncIterator[tuple[int, str, JSONDict]]:
        """Yield ``(version, type, data)`` of a stream's events: what replaying needs, no more.

        The runtime's fast path for loading actors: three columns instead of eight, and no
        metadata or timestamps to decode.
        """
        check_stream_id(stream_id)
        _check_no_nul("a stream id", stream_id)
        version = max(from_version, 1)
        if version > MAX_VERSION:
            return
        sql = (
            f"SELECT version, type, coalesce(data_text, data::text), position, {self._sql.data_z} "
            f"FROM {self._sql.events} WHERE stream_id = $1 AND version >= $2 "
            "ORDER BY version LIMIT "
        )
        async for row in self._pages(sql, [stream_id, version], 1, key=0):
            yield row[0], row[1], event_data_of(stream_id, row)

    async def load_latest(
        self, stream_id: str
    ) -> tuple[SnapshotRecord | None, list[tuple[int, str, JSONDict]], bool]:
        """Return the latest snapshot and the first page of events after it, in one query.

        The runtime's fast path for activating an actor: one round trip instead of two.
        Returns ``(snapshot or None, [(version, type, data), ...], complete)``; when
        ``complete`` is false, more events follow the page (read them with
        :meth:`read_stream_data`).
        """
        check_stream_id(stream_id)
        _check_no_nul("a stream id", stream_id)
        rows = await self._fetch(self._sql.latest, stream_id, self.read_page_size)
        snapshot = None
        if rows and rows[0][0] == 0:
            found, *rows = rows
            state = found[5] if found[3] is None else found[3]  # compressed, or JSON text
            snapshot = snapshot_record(stream_id, found[1], state, found[4], found[6])
            if snapshot is None:  # damaged: the events after it are of no use without it
                return None, [], False
        events = event_data(stream_id, rows, first=1)
        return snapshot, events, len(events) < self.read_page_size

    async def _pages(
        self, sql: str, params: list[Any], key_param: int, *, key: int
    ) -> AsyncIterator[Any]:
        """Yield the rows of a query paged by key, fetching the next page while this one is
        consumed.

        ``sql`` ends in ``LIMIT `` (the page size is the last parameter); ``params[key_param]``
        is where the page starts, and the next page starts after the last row's column ``key``.
        Each page is one pooled round trip: no connection is held between pages.
        """
        page_size = self.read_page_size
        sql = f"{sql}${len(params) + 1}"
        pending: asyncio.Future[list[Any]] | None = asyncio.ensure_future(
            self._fetch(sql, *params, page_size)
        )
        try:
            while pending is not None:
                rows = await pending
                pending = None
                if len(rows) == page_size and rows[-1][key] < MAX_VERSION:
                    params = list(params)
                    params[key_param] = rows[-1][key] + 1
                    pending = asyncio.ensure_future(self._fetch(sql, *params, page_size))
                for row in rows:
                    yield row
        finally:
            if pending is not None:
                pending.cancel()

    async def stream_version(self, stream_id: str, *, at: datetime | None = None) -> int:
        """Return the version of a stream's last event (see :class:`EventStore`)."""
        check_stream_id(stream_id)
        _check_no_nul("a stream id", stream_id)
        moment = check_time("at", at)
        if moment is None:
            rows = await self._fetch(self._sql.stream_head, stream_id)
        else:
            rows = await self._fetch(self._sql.stream_head_at, stream_id, moment)
        return int(rows[0][0])

    async def head_position(self) -> int:
        """Return the position of the last event (see :class:`EventStore`)."""
        self._check_open()
        head = await self._head()
        self._watch.advance(head)
        return head

    async def _head(self) -> int:
        rows = await self._fetch(self._sql.head, check=False)
        return int(rows[0][0])

    async def wait_for_events(self, after_position: int, timeout: float) -> None:  # noqa: ASYNC109  # a poll interval
        """Return when an event beyond ``after_position`` was committed by any process (a
        notification), or after ``timeout``."""
        self._check_open()
        await self._watch.wait_beyond(after_position, timeout)

    async def find_command_events(
        self, stream_id: str, command_ids: Collection[str]
    ) -> list[StoredEvent]:
        """Return the events that commands with these ids produced (see :class:`EventStore`).

        Compares ``metadata->>'command_id'`` on the stream's rows (found through the
        ``(stream_id, version)`` index): a scan of the stream per call, and no index of its own,
        so that appends pay nothing for it. Rows whose metadata holds a NUL (JSONB cannot, so
        only its exact text is kept) are compared here, on that text.
        """
        check_stream_id(stream_id)
        _check_no_nul("a stream id", stream_id)
        ids = check_command_ids(command_ids)
        rows = await self._fetch(self._sql.command_events, stream_id, ids)
        wanted = set(ids)
        found = [stored_event(row, row[7]) for row in rows]
        return [e for e in found if _command_id_of(e) in wanted]

    async def list_streams(self, category: str | None = None) -> list[StreamInfo]:
        """Return the streams with their versions (see :class:`EventStore`)."""
        prefix = None if category is None else f"{category}-"
        rows = await self._fetch(self._sql.list_streams, prefix)
        return [StreamInfo(row[0], int(row[1]), row[2]) for row in rows]

    async def list_checkpoints(self) -> dict[str, int]:
        """Return every checkpoint (see :class:`EventStore`)."""
        rows = await self._fetch(self._sql.list_checkpoints)
        return {row[0]: int(row[1]) for row in rows}

    async def delete_checkpoint(self, name: str) -> bool:
        """Remove checkpoint ``name``; return whether there was one."""
        self._check_open()
        check_checkpoint(name)
        _check_no_nul("a checkpoint name", name)
        if self.read_only:
            msg = f"{self!r} was opened read_only: it cannot write"
            raise StoreError(msg)
        return bool(await self._fetch(self._sql.delete_checkpoint, name, doing="writing to"))

    async def load_checkpoint(self, name: str) -> int:
        """Return the checkpoint ``name`` (see :class:`EventStore`)."""
        check_checkpoint(name)
        _check_no_nul("a checkpoint name", name)
        rows = await self._fetch(self._sql.load_checkpoint, name)
        return int(rows[0][0]) if rows else 0

    async def load_snapshot(
        self, stream_id: str, max_version: int | None = None
    ) -> SnapshotRecord | None:
        """Return the latest snapshot at or before ``max_version`` (see :class:`EventStore`)."""
        check_stream_id(stream_id)
        _check_no_nul("a stream id", stream_id)
        rows = await self._fetch(
            self._sql.load_snapshot,
            stream_id,
            MAX_VERSION if max_version is None else max(min(max_version, MAX_VERSION), -1),
        )
        if not rows:
            return None
        version, schema_version, state, recorded_at, compressed = rows[0]
        if state is None:
            state = compressed
        return snapshot_record(stream_id, version, state, schema_version, recorded_at)

    async def list_snapshots(self, stream_id: str) -> list[SnapshotInfo]:
        """Return the stream's snapshots, oldest version first (see :class:`EventStore`)."""
        check_stream_id(stream_id)
        _check_no_nul("a stream id", stream_id)
        rows = await self._fetch(self._sql.list_snapshots, stream_id)
        return [SnapshotInfo(stream_id, v, schema_version, at) for v, schema_version, at in rows]

    async def _fetch(
        self, sql: str, *params: object, check: bool = True, doing: str = "reading from"
    ) -> list[Any]:
        if check:  # not while opening, nor for the listener's catch-up
            self._check_open()
        pool = self._pool
        if pool is None:
            msg = f"{self!r} is not connected"
            raise StoreError(msg)
        assert pool is not None
        try:
            async with pool.acquire() as conn:
                return await conn.fetch(sql, *params)
        except self._errors as exc:
            detail = " ".join(str(exc).split())
            msg = f"{doing} PostgreSQL at {self._where} failed: {type(exc).__name__}: {detail}"
            raise StoreError(msg) from exc

    async def _execute(self, sql: str, *params: object) -> None:
        if self.read_only:
            self._check_open()
            msg = f"{self!r} was opened read_only: it cannot write"
            raise StoreError(msg)
        await self._fetch(sql, *params, doing="writing to")


def _command_id_of(event: StoredEvent) -> str | None:
    """The ``"command_id"`` of an event's metadata, if it is a str (as the runtime stores it)."""
    metadata = event.metadata
    found = metadata.get("command_id") if isinstance(metadata, dict) else None
    return found if isinstance(found, str) else None


def _time_range(since: datetime | None, until: datetime | None, params: list[Any]) -> str:
    """SQL conditions for ``[since, until)`` on ``recorded_at``; appends their parameters."""
    sql = ""
    if since is not None:
        params.append(since)
        sql += f" AND recorded_at >= ${len(params)}"
    if until is not None:
        params.append(until)
        sql += f" AND recorded_at < ${len(params)}"
    return sql
