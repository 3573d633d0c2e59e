"""The SQLite store's durable timers: writes through the writer, reads through the reader."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from ..._records import AppendResult, NewEvent
from ..._timers import StoredTimer, TimerChange, TimerSchedule, epoch_us, from_epoch_us
from .._base import (
    StoreLifecycle,
    check_claim,
    check_timer_append,
    decode_json,
    encode_rows,
    encode_timer_data,
)
from .ops import _Op, _TimedAppend, _Work

_TIMER_COLUMNS = (
    "owner, key, target, command_type, data, due_at, interval, missed, claimed_by, claim_expires"
)
_FREE = "due_at <= ? AND (claimed_by IS NULL OR claim_expires < ?)"


class SQLiteTimers(StoreLifecycle):
    """The timer half of :class:`SQLiteEventStore` (see :class:`TimerStore`)."""

    def _enqueue(self, op: _Op) -> None:
        raise NotImplementedError

    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        raise NotImplementedError

    async def append_with_timers(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        timers: Sequence[TimerChange],
    ) -> AppendResult:
        """Append events and write timers in one transaction (see :class:`TimerStore`)."""
        self._check_open()
        check_timer_append(stream_id, expected_version, events, timers)
        rows = encode_rows(events) if events else []
        writes: list[tuple[Any, ...]] = []
        for change in timers:
            if isinstance(change, TimerSchedule):
                data = encode_timer_data(change)
                writes.append(
                    (
                        "set",
                        change.owner,
                        change.key,
                        change.target,
                        change.command_type,
                        data,
                        epoch_us(change.due_at),
                        change.interval,
                        change.missed,
                    )
                )
            else:
                writes.append(("drop", change.owner, change.key))
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._enqueue(_TimedAppend(stream_id, expected_version, rows, writes, future))
        return await future

    async def claim_due_timers(
        self,
        claimant: str,
        now: datetime,
        lease: float,
        *,
        limit: int,
        categories: Collection[str] | None = None,
    ) -> list[StoredTimer]:
        """Claim due timers nobody holds, in one write transaction (see :class:`TimerStore`)."""
        self._check_open()
        check_claim(claimant, now, lease, limit)
        if categories is not None and not categories:
            return []
        at = epoch_us(now)
        where = _FREE
        params: list[Any] = [at, at]
        if categories is not None:
            marks = ", ".join("?" * len(categories))
            where += f" AND substr(target, 1, instr(target, '-') - 1) IN ({marks})"
            params += list(categories)
        # a read first: a poll that finds nothing due takes no write lock
        if not await self._fetch(f"SELECT 1 FROM timers WHERE {where} LIMIT 1", tuple(params)):
            return []
        expires = epoch_us(now + timedelta(seconds=lease))
        sql = (
            "UPDATE timers SET claimed_by = ?, claim_expires = ? WHERE rowid IN "
            f"(SELECT rowid FROM timers WHERE {where} ORDER BY due_at LIMIT ?) "
            f"RETURNING {_TIMER_COLUMNS}"
        )
        values = (claimant, expires, *params, limit)

        def claim(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(sql, values).fetchall()

        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._enqueue(_Work(claim, future))
        rows = await future
        return sorted((_timer(row) for row in rows), key=lambda t: (t.due_at, t.owner, t.key))

    async def finish_timer(
        self, timer: StoredTimer, claimant: str, next_due: datetime | None
    ) -> bool:
        """Drop or move a claimed tick if the claim stands (see :class:`TimerStore`)."""
        self._check_open()
        held: tuple[Any, ...] = (timer.owner, timer.key, claimant, epoch_us(timer.due_at))
        match = "owner = ? AND key = ? AND claimed_by = ? AND due_at = ?"
        values: tuple[Any, ...]
        if next_due is None:
            sql, values = f"DELETE FROM timers WHERE {match}", held
        else:
            sql = (
                "UPDATE timers SET due_at = ?, claimed_by = NULL, claim_expires = NULL "
                f"WHERE {match}"
            )
            values = (epoch_us(next_due), *held)

        def finish(conn: sqlite3.Connection) -> bool:
            return conn.execute(sql, values).rowcount == 1

        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._enqueue(_Work(finish, future))
        return await future

    async def list_timers(self) -> list[StoredTimer]:
        """Return every timer, the earliest due first."""
        rows = await self._fetch(
            f"SELECT {_TIMER_COLUMNS} FROM timers ORDER BY due_at, owner, key", ()
        )
        return [_timer(row) for row in rows]


def _timer(row: Any) -> StoredTimer:
    owner, key, target, kind, data, due, interval, missed, claimed_by, expires = row
    return StoredTimer(
        owner,
        key,
        target,
        kind,
        decode_json(data),
        from_epoch_us(due),
        interval,
        missed,
        claimed_by,
        None if expires is None else from_epoch_us(expires),
    )
