"""Archiving and deleting streams in PostgreSQL, each in one transaction of a pooled
connection: a deletion's tombstone goes in through the append function (its lock, its
positions, its notification), so that it is an append like any other."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..._errors import ActorsourceError, StoreError
from ..._records import AppendResult, NewEvent
from .._base import (
    HeadWatch,
    InlineHook,
    StoreLifecycle,
    archive_refusal,
    before_kept,
    check_archive_args,
    check_delete_args,
    decode_json,
    deletion_refusal,
    encode_json,
)
from .connection import _Connection, _Pool
from .plan import _check_no_nul, _jsonb_columns
from .schema import _Statements
from .transactions import _TransactionStatements, feed_inline

T = TypeVar("T")


class PostgresRetention(StoreLifecycle):
    """The retention operations of :class:`PostgresEventStore` (a part of it)."""

    # set by the store
    _errors: tuple[type[BaseException], ...]
    _pool: _Pool | None
    _sql: _Statements
    _where: str
    _append_lock: int
    _watch: HeadWatch
    _inline: dict[str, InlineHook]
    _tx_sql: _TransactionStatements

    async def archive_stream(
        self, stream_id: str, through_version: int, max_position: int | None
    ) -> int:
        """Remove a stream's events up to ``through_version`` once they are safe to remove
        (see ``StoreCapabilities.archive_stream``); return how many were removed."""
        self._check_open()
        check_archive_args(stream_id, through_version, max_position)
        _check_no_nul("a stream id", stream_id)
        events = self._sql.events
        schema = events.rsplit(".", 1)[0]

        async def work(conn: _Connection) -> int:
            # the checkpoints stay where they are until this commits (a rebuild resetting
            # one waits), so that what is removed is behind them
            checkpoints = dict(
                await conn.fetch(f"SELECT name, position FROM {schema}.checkpoints FOR SHARE")
            )
            last, first = await _ends(conn, events, stream_id)
            snapshot = await conn.fetchval(
                f"SELECT max(version) FROM {schema}.snapshots WHERE stream_id = $1", stream_id
            )
            through = await conn.fetchval(
                f"SELECT position FROM {events} WHERE stream_id = $1 AND version = $2",
                stream_id,
                through_version,
            )
            refusal = archive_refusal(
                stream_id,
                through_version,
                head=last[0] if last else 0,
                first_kept=first[0] if first else 1,
                last_type=last[1] if last else None,
                last_data=decode_json(last[2]) if last else None,
                snapshot_version=snapshot,
                through_position=through,
                max_position=max_position,
                checkpoints=checkpoints,
            )
            if refusal is not None:
                raise refusal
            status = await conn.execute(
                f"DELETE FROM {events} WHERE stream_id = $1 AND version <= $2",
                stream_id,
                through_version,
            )
            return int(status.split()[-1])

        return await self._in_transaction(work, "archiving in")

    async def delete_stream(self, stream_id: str, tombstone: NewEvent, hard: bool) -> AppendResult:
        """Append the tombstone and, if ``hard``, remove the stream's other events and its
        snapshots (see ``StoreCapabilities.delete_stream``)."""
        self._check_open()
        check_delete_args(stream_id, tombstone.type, hard)
        _check_no_nul("a stream id", stream_id)
        _check_no_nul("an event id", tombstone.event_id)
        data = _jsonb_columns(encode_json(tombstone.data, "data", tombstone), tombstone.data)
        meta = _jsonb_columns(
            encode_json(tombstone.metadata, "metadata", tombstone), tombstone.metadata
        )
        events = self._sql.events
        schema = events.rsplit(".", 1)[0]

        async def work(conn: _Connection) -> AppendResult:
            # appends take turns on this lock: the stream's head stays put until the commit
            await conn.execute(self._sql.lock, self._append_lock)
            last, _ = await _ends(conn, events, stream_id)
            head = last[0] if last else 0
            refusal = deletion_refusal(
                stream_id,
                hard,
                head=head,
                last_type=last[1] if last else None,
                last_data=decode_json(last[2]) if last else None,
            )
            if refusal is not None:
                raise refusal
            row = await conn.fetchrow(
                self._sql.append,
                [stream_id],
                [head + 1],
                [tombstone.type],
                [data[0]],
                [data[1]],
                [meta[0]],
                [meta[1]],
                [tombstone.event_id],
                [stream_id],
                [head],
                [],
                [],
                [],
                [],
                [],
                None,  # a tombstone's data is small: never compressed
                [],
            )
            if self._inline:  # inline projections handle the tombstone in its transaction
                await feed_inline(conn, dict(self._inline), self._tx_sql)
            if hard:
                await conn.execute(
                    f"DELETE FROM {events} WHERE stream_id = $1 AND version <= $2", stream_id, head
                )
                await conn.execute(
                    f"DELETE FROM {schema}.snapshots WHERE stream_id = $1", stream_id
                )
            return AppendResult(head + 1, int(row[0]), row[1])

        result = await self._in_transaction(work, "deleting a stream in")
        self._watch.advance(result.first_position)
        return result

    async def _fetch_first(self, stream_id: str) -> tuple[Any, ...] | None:
        async def work(conn: _Connection) -> tuple[Any, ...] | None:
            _, first = await _ends(conn, self._sql.events, stream_id)
            return first

        return await self._in_transaction(work, "reading from")

    async def _refuse_before(self, stream_id: str, version: int) -> None:
        """Raise if the stream's stored events start after ``version`` (archived before it)."""
        first = await self._fetch_first(stream_id)
        if first is not None and first[0] > version:
            raise before_kept(stream_id, first[0], first[1], decode_json(first[2]))

    async def _in_transaction(self, work: Callable[[_Connection], Awaitable[T]], doing: str) -> T:
        pool = self._pool
        if pool is None:
            msg = f"{self!r} is not connected"
            raise StoreError(msg)
        try:
            async with pool.acquire() as conn, conn.transaction():
                return await work(conn)
        except ActorsourceError:
            raise
        except self._errors as exc:
            detail = " ".join(str(exc).split())
            msg = (
                f"{doing} PostgreSQL at {self._where} failed (nothing was changed): "
                f"{type(exc).__name__}: {detail}"
            )
            raise StoreError(msg) from exc


async def _ends(
    conn: _Connection, events: str, stream_id: str
) -> tuple[tuple[Any, ...] | None, tuple[Any, ...] | None]:
    """The stream's last and first stored events as (version, type, data as JSON text or
    compressed), or None."""
    rows = await conn.fetch(
        f"(SELECT 0, version, type, coalesce(data_text, data::text), data_z FROM {events} "
        "WHERE stream_id = $1 ORDER BY version DESC LIMIT 1) UNION ALL "
        f"(SELECT 1, version, type, coalesce(data_text, data::text), data_z FROM {events} "
        "WHERE stream_id = $1 ORDER BY version LIMIT 1)",
        stream_id,
    )
    found: dict[int, tuple[Any, ...]] = {
        int(r[0]): (int(r[1]), r[2], r[4] if r[3] is None else r[3]) for r in rows
    }
    return found.get(0), found.get(1)
