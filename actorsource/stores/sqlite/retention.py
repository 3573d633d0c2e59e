"""Archiving and deleting streams in SQLite: each in one transaction of a connection of its
own, like another process's writer (the store's writer learns of the change as it learns of
other processes' appends: its next append to that stream meets the new version)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from ..._errors import StoreError
from ..._records import AppendResult, NewEvent
from .._base import (
    HeadWatch,
    StoreLifecycle,
    archive_refusal,
    before_kept,
    check_archive_args,
    check_delete_args,
    decode_json,
    deletion_refusal,
    encode_rows,
    utc_now,
)
from .schema import _INSERT_EVENT, connect

T = TypeVar("T")

_LAST: str = (
    "SELECT version, type, data FROM events WHERE stream_id = ? ORDER BY version DESC LIMIT 1"
)
_FIRST: str = "SELECT version, type, data FROM events WHERE stream_id = ? ORDER BY version LIMIT 1"


class SQLiteRetention(StoreLifecycle):
    """The retention operations of :class:`SQLiteEventStore` (a part of it)."""

    path: Path
    synchronous: str
    busy_timeout: float
    _watch: HeadWatch

    async def archive_stream(
        self, stream_id: str, through_version: int, max_position: int | None
    ) -> int:
        """Remove a stream's events up to ``through_version`` once they are safe to remove
        (see ``StoreCapabilities.archive_stream``); return how many were removed."""
        self._check_open()
        check_archive_args(stream_id, through_version, max_position)
        return await self._maintain(
            lambda conn: _archive(conn, stream_id, through_version, max_position)
        )

    async def delete_stream(self, stream_id: str, tombstone: NewEvent, hard: bool) -> AppendResult:
        """Append the tombstone and, if ``hard``, remove the stream's other events and its
        snapshots (see ``StoreCapabilities.delete_stream``)."""
        self._check_open()
        check_delete_args(stream_id, tombstone.type, hard)
        # a tombstone's data is small: never compressed
        row = cast("tuple[str, str, str, str]", encode_rows([tombstone])[0])
        result = await self._maintain(lambda conn: _delete(conn, stream_id, row, hard))
        self._watch.advance(result.first_position)
        return result

    async def _maintain(
        self, job: Callable[[sqlite3.Connection], T], *, transaction: bool = True
    ) -> T:
        """Run ``job`` in one write transaction on a connection of its own (``transaction``
        false: outside one, for a checkpoint)."""
        try:
            conn = await connect(
                self.path, "retention", busy_timeout=self.busy_timeout, cache_kib=2048
            )
        except sqlite3.Error as exc:
            msg = f"cannot open {str(self.path)!r}: {exc}"
            raise StoreError(msg) from exc
        try:
            connection = conn.connection

            def in_transaction() -> T:
                connection.execute(f"PRAGMA synchronous = {self.synchronous}")
                # what is deleted is overwritten (a destroyed key, a dropped snapshot)
                connection.execute("PRAGMA secure_delete = ON")
                if not transaction:
                    return job(connection)
                connection.execute("BEGIN IMMEDIATE")
                try:
                    result = job(connection)
                    connection.execute("COMMIT")
                except BaseException:
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                    raise
                return result

            try:
                return await conn.run(in_transaction)
            except sqlite3.Error as exc:
                msg = f"{self!r} failed (nothing was changed): {exc}"
                raise StoreError(msg) from exc
        finally:
            await conn.close()


def _archive(
    conn: sqlite3.Connection, stream_id: str, through_version: int, max_position: int | None
) -> int:
    last = conn.execute(_LAST, (stream_id,)).fetchone()
    first = conn.execute(_FIRST, (stream_id,)).fetchone()
    snapshot = conn.execute(
        "SELECT max(version) FROM snapshots WHERE stream_id = ?", (stream_id,)
    ).fetchone()[0]
    through = conn.execute(
        "SELECT position FROM events WHERE stream_id = ? AND version = ?",
        (stream_id, through_version),
    ).fetchone()
    checkpoints = dict(conn.execute("SELECT name, position FROM checkpoints").fetchall())
    refusal = archive_refusal(
        stream_id,
        through_version,
        head=last[0] if last else 0,
        first_kept=first[0] if first else 1,
        last_type=last[1] if last else None,
        last_data=decode_json(last[2]) if last else None,
        snapshot_version=snapshot,
        through_position=through[0] if through else None,
        max_position=max_position,
        checkpoints=checkpoints,
    )
    if refusal is not None:
        raise refusal
    removed = conn.execute(
        "DELETE FROM events WHERE stream_id = ? AND version <= ?", (stream_id, through_version)
    )
    return removed.rowcount


def _delete(
    conn: sqlite3.Connection, stream_id: str, row: tuple[str, str, str, str], hard: bool
) -> AppendResult:
    last = conn.execute(_LAST, (stream_id,)).fetchone()
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
    position = conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0] + 1
    now = utc_now()
    kind, data, metadata, event_id = row
    conn.execute(
        _INSERT_EVENT,
        (position, stream_id, head + 1, kind, data, metadata, event_id, now.isoformat()),
    )
    if hard:
        conn.execute("DELETE FROM events WHERE stream_id = ? AND version <= ?", (stream_id, head))
        conn.execute("DELETE FROM snapshots WHERE stream_id = ?", (stream_id,))
    return AppendResult(head + 1, position, now)


def refuse_before(stream_id: str, version: int, first: tuple[Any, ...] | None) -> None:
    """Raise if a read of ``stream_id`` from ``version`` starts before its first stored event."""
    if first is not None and first[0] > version:
        raise before_kept(stream_id, first[0], first[1], decode_json(first[2]))
