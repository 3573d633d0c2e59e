"""Archiving and deleting streams in the memory store (a part of :class:`InMemoryEventStore`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._records import AppendResult, NewEvent, SnapshotRecord
from ._base import (
    archive_refusal,
    check_archive_args,
    check_delete_args,
    decode_json,
    deletion_refusal,
)
from .memory_rows import _Row


class MemoryRetention:
    """Removing archived events and deleted streams from the memory store's tables."""

    _log: list[_Row]
    _streams: dict[str, list[_Row]]
    _event_ids: set[str]
    _snapshots: dict[str, dict[int, SnapshotRecord]]
    _checkpoints: dict[str, int]

    if TYPE_CHECKING:  # the store's own, found through the class that mixes this in

        def _check_open(self) -> None: ...

        def _append_now(
            self, stream_id: str, expected_version: int | None, events: Sequence[NewEvent]
        ) -> AppendResult: ...

    async def archive_stream(
        self, stream_id: str, through_version: int, max_position: int | None
    ) -> int:
        """Remove a stream's events up to ``through_version``, once they are safe to remove
        (see :attr:`StoreCapabilities.archive_stream`); return how many were removed."""
        self._check_open()
        check_archive_args(stream_id, through_version, max_position)
        rows = self._streams.get(stream_id, [])
        first_kept = rows[0].version if rows else 1
        through = next((r for r in rows if r.version == through_version), None)
        snapshots = self._snapshots.get(stream_id, {})
        refusal = archive_refusal(
            stream_id,
            through_version,
            head=rows[-1].version if rows else 0,
            first_kept=first_kept,
            last_type=rows[-1].type if rows else None,
            last_data=decode_json(rows[-1].data) if rows else None,
            snapshot_version=max(snapshots, default=None),
            through_position=None if through is None else through.position,
            max_position=max_position,
            checkpoints=self._checkpoints,
        )
        if refusal is not None:
            raise refusal
        removed = [r for r in rows if r.version <= through_version]
        if removed:
            self._remove(stream_id, removed)
        await asyncio.sleep(0)
        return len(removed)

    async def delete_stream(self, stream_id: str, tombstone: NewEvent, hard: bool) -> AppendResult:
        """Append the tombstone and, if ``hard``, remove the stream's other events and its
        snapshots (see :attr:`StoreCapabilities.delete_stream`)."""
        self._check_open()
        check_delete_args(stream_id, tombstone.type, hard)
        rows = self._streams.get(stream_id, [])
        head = rows[-1].version if rows else 0
        refusal = deletion_refusal(
            stream_id,
            hard,
            head=head,
            last_type=rows[-1].type if rows else None,
            last_data=decode_json(rows[-1].data) if rows else None,
        )
        if refusal is not None:
            raise refusal
        result = self._append_now(stream_id, head, [tombstone])
        if hard:
            self._remove(stream_id, [r for r in self._streams[stream_id] if r.version <= head])
            self._snapshots.pop(stream_id, None)
        await asyncio.sleep(0)
        return result

    def _remove(self, stream_id: str, removed: list[_Row]) -> None:
        gone = {row.position for row in removed}
        self._log = [row for row in self._log if row.position not in gone]
        self._streams[stream_id] = self._streams[stream_id][len(removed) :]
        self._event_ids.difference_update(row.event_id for row in removed)
