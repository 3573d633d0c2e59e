"""The PostgreSQL store's durable timers: timed appends in a transaction of their own (the
append function's lock and checks, then the timer writes), claims with ``SKIP LOCKED``."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from ..._errors import ConcurrencyError, StoreError
from ..._records import AppendResult, NewEvent
from ..._timers import StoredTimer, TimerChange, TimerSchedule, epoch_us, from_epoch_us
from .._base import (
    Fence,
    HeadWatch,
    KnownHeads,
    StoreLifecycle,
    check_claim,
    check_timer_append,
    compress_json,
    decode_json,
    encode_json,
    encode_timer_data,
)
from .cluster import _ClusterStatements, check_fence
from .connection import _Pool
from .plan import _check_no_nul, _jsonb_columns
from .schema import _Statements

#: the append function's five snapshot arrays, empty: a timed append saves no snapshot
_NO_SNAPSHOTS: tuple[list[Any], ...] = ([], [], [], [], [])

_TIMER_COLUMNS = (
    "owner, key, target, command_type, data, due_at, interval, missed, claimed_by, claim_expires"
)


class PostgresTimers(StoreLifecycle):
    """The timer half of :class:`PostgresEventStore` (see :class:`TimerStore`)."""

    # set by the store
    _pool: _Pool | None
    _sql: _Statements
    _cluster_sql: _ClusterStatements
    _driver: Any
    _errors: tuple[type[BaseException], ...]
    _where: str
    _heads: KnownHeads
    _watch: HeadWatch
    compress_over: int | None
    schema: str

    async def _fetch(
        self, sql: str, *params: object, check: bool = True, doing: str = "reading from"
    ) -> list[Any]:
        raise NotImplementedError

    async def append_with_timers(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        timers: Sequence[TimerChange],
    ) -> AppendResult:
        """Append events and write timers in one transaction (see :class:`TimerStore`)."""
        return await self._append_with_timers(stream_id, expected_version, events, timers, None)

    async def append_fenced_with_timers(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        timers: Sequence[TimerChange],
        fence: Fence,
    ) -> AppendResult:
        """Append events and write timers in one transaction that first checks the fence
        (see :class:`ClusterStore`); :class:`FencedError` stores nothing."""
        return await self._append_with_timers(stream_id, expected_version, events, timers, fence)

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
        _check_no_nul("a stream id", stream_id)
        columns: list[list[Any]] = [[] for _ in range(8)]
        over = self.compress_over
        compressed: list[bytes | None] = []
        for offset, e in enumerate(events):
            _check_no_nul("an event type", e.type)
            _check_no_nul("an event id", e.event_id)
            data = encode_json(e.data, "data", e)
            meta = encode_json(e.metadata, "metadata", e)
            # a command's events with its timers: few, and compressed as the writer would
            large = over is not None and len(data) > over
            compressed.append(compress_json(data) if large else None)
            row = (
                stream_id,
                expected_version + offset + 1,
                e.type,
                *((None, None) if large else _jsonb_columns(data, e.data)),
                *_jsonb_columns(meta, e.metadata),
                e.event_id,
            )
            for column, value in zip(columns, row, strict=True):
                column.append(value)
        writes = [_timer_write(self.schema, change) for change in timers]
        pool = self._pool
        if pool is None:
            msg = f"{self!r} is not connected"
            raise StoreError(msg)
        try:
            async with pool.acquire() as conn, conn.transaction(isolation="read_committed"):
                if fence is not None:  # the lease first, before the append takes its lock
                    await check_fence(conn, self._cluster_sql, stream_id, fence)
                found = await conn.fetchrow(
                    self._sql.append,
                    *columns,
                    [stream_id],
                    [expected_version],
                    *_NO_SNAPSHOTS,
                    compressed if any(compressed) else None,
                    [],
                )
                for sql, params in writes:
                    await conn.execute(sql, *params)
        except self._errors as exc:
            if getattr(exc, "sqlstate", None) == "40001":  # the append function's stale check
                actual = await self._fetch(self._sql.stream_head, stream_id)
                raise ConcurrencyError(stream_id, expected_version, int(actual[0][0])) from None
            detail = " ".join(str(exc).split())
            msg = (
                f"appending with timers to {stream_id!r} at {self._where} failed: "
                f"{type(exc).__name__}: {detail}; nothing of it was stored"
            )
            raise StoreError(msg) from exc
        first, at = int(found[0]), found[1]
        self._heads.pop(stream_id, None)  # appended beside the writer, which must look again
        if events:
            self._watch.advance(first + len(events) - 1)
        return AppendResult(expected_version + len(events), first, at)

    async def claim_due_timers(
        self,
        claimant: str,
        now: datetime,
        lease: float,
        *,
        limit: int,
        categories: Collection[str] | None = None,
    ) -> list[StoredTimer]:
        """Claim due timers nobody holds, in one statement (see :class:`TimerStore`)."""
        self._check_open()
        check_claim(claimant, now, lease, limit)
        if categories is not None and not categories:
            return []
        at = epoch_us(now)
        t = f'"{self.schema}".timers'
        rows = await self._fetch(
            f"UPDATE {t} SET claimed_by = $1, claim_expires = $2 WHERE (owner, key) IN ("
            f"SELECT owner, key FROM {t} WHERE due_at <= $3 AND "
            "(claimed_by IS NULL OR claim_expires < $3) AND "
            "($4::text[] IS NULL OR split_part(target, '-', 1) = ANY($4::text[])) "
            f"ORDER BY due_at LIMIT $5 FOR UPDATE SKIP LOCKED) RETURNING {_TIMER_COLUMNS}",
            claimant,
            epoch_us(now + timedelta(seconds=lease)),
            at,
            None if categories is None else list(categories),
            limit,
            doing="claiming timers in",
        )
        return sorted((_timer(row) for row in rows), key=lambda t: (t.due_at, t.owner, t.key))

    async def finish_timer(
        self, timer: StoredTimer, claimant: str, next_due: datetime | None
    ) -> bool:
        """Drop or move a claimed tick if the claim stands (see :class:`TimerStore`)."""
        self._check_open()
        t = f'"{self.schema}".timers'
        match = "owner = $1 AND key = $2 AND claimed_by = $3 AND due_at = $4"
        held = (timer.owner, timer.key, claimant, epoch_us(timer.due_at))
        if next_due is None:
            rows = await self._fetch(
                f"DELETE FROM {t} WHERE {match} RETURNING 1", *held, doing="writing to"
            )
        else:
            rows = await self._fetch(
                f"UPDATE {t} SET due_at = $5, claimed_by = NULL, claim_expires = NULL "
                f"WHERE {match} RETURNING 1",
                *held,
                epoch_us(next_due),
                doing="writing to",
            )
        return bool(rows)

    async def list_timers(self) -> list[StoredTimer]:
        """Return every timer, the earliest due first."""
        rows = await self._fetch(
            f'SELECT {_TIMER_COLUMNS} FROM "{self.schema}".timers '
            'ORDER BY due_at, owner COLLATE "C", key COLLATE "C"'
        )
        return [_timer(row) for row in rows]


def _timer_write(schema: str, change: TimerChange) -> tuple[str, tuple[Any, ...]]:
    t = f'"{schema}".timers'
    for text in (change.owner, change.key):
        _check_no_nul("a timer's stream or key", text)
    if not isinstance(change, TimerSchedule):
        return f"DELETE FROM {t} WHERE owner = $1 AND key = $2", (change.owner, change.key)
    data = encode_timer_data(change)
    _check_no_nul("a timer's command data", data)
    sql = (
        f"INSERT INTO {t} (owner, key, target, command_type, data, due_at, interval, missed, "
        "claimed_by, claim_expires) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL) "
        "ON CONFLICT (owner, key) DO UPDATE SET target = excluded.target, "
        "command_type = excluded.command_type, data = excluded.data, "
        "due_at = excluded.due_at, interval = excluded.interval, missed = excluded.missed, "
        "claimed_by = NULL, claim_expires = NULL"
    )
    params = (
        change.owner,
        change.key,
        change.target,
        change.command_type,
        data,
        epoch_us(change.due_at),
        change.interval,
        change.missed,
    )
    return sql, params


def _timer(row: Any) -> StoredTimer:
    owner, key, target, kind, data, due, interval, missed, claimed_by, expires = row
    return StoredTimer(
        owner,
        key,
        target,
        kind,
        decode_json(data),
        from_epoch_us(int(due)),
        interval,
        missed,
        claimed_by,
        None if expires is None else from_epoch_us(int(expires)),
    )
