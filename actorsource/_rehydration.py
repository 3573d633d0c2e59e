"""Rehydration: an aggregate's state rebuilt from the store, snapshot first, then its tail.

One function, :meth:`Rehydration.rehydrate`, serves every load: an actor's activation, its
reload after a failure, its reload before a conflicting batch is decided again, and time travel
(``Runtime.state_at``, which starts from the latest snapshot at or before the version asked
for). The callback load (a store's ``load_latest_then``) uses its two halves: :meth:`start` in
the loop step that receives the first page, :meth:`replay_rest` in a task when there is more.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from ._codec import Codec
from ._decider import Decider
from ._errors import ActorFailedError, CodecError, StreamArchivedError, StreamDeletedError
from ._records import TOMBSTONE_TYPE, JSONDict, SnapshotRecord
from .stores._base import Latest

logger = logging.getLogger("actorsource.actor")

#: stored events as (version, type name, data)
Page = list[tuple[int, str, JSONDict]]
#: read a stream's events as (version, type name, data) from a version on
ReadFrom = Callable[[int], AsyncIterator[tuple[int, str, JSONDict]]]

#: events replayed per page of a long tail
_PAGE = 1000


class Rehydration:
    """Rebuilds one aggregate's state (cheap to make: one per load)."""

    __slots__ = ("codec", "decider", "stream_id")

    def __init__(self, decider: Decider[Any, Any, Any], codec: Codec, stream_id: str) -> None:
        self.decider = decider
        self.codec = codec
        self.stream_id = stream_id

    async def rehydrate(self, latest: Latest, read_from: ReadFrom) -> tuple[Any, int, int]:
        """Return the state, its version, and the version replaying started after.

        :param latest: the latest snapshot (or None), the first page of events after it, and
            whether that page is all of them
        :param read_from: reads the events after the first page
        """
        state, version, start, complete = self.start(*latest)
        if not complete:
            state, version = await self.replay_rest(read_from(version + 1), state, version)
        return state, version, start

    def start(
        self,
        snapshot: SnapshotRecord | None,
        first_page: Page,
        complete: bool,  # one of the three parts of a load, as returned
    ) -> tuple[Any, int, int, bool]:
        """Start from the snapshot (if usable) and replay the first page.

        Returns the state, its version, the version replaying started after, and whether the
        stream has no more events.
        """
        state = self.decider.initial_state
        version = 0
        if snapshot is not None:
            decoded = self.decode_snapshot(snapshot)
            if decoded is not None:
                state, version = decoded[0], snapshot.version
            else:
                # the page read with it starts after the snapshot: of no use without it
                first_page, complete = [], False
        start = version
        state, version = self.replay(state, version, first_page)
        return state, version, start, complete

    async def replay_rest(
        self, events: AsyncIterator[tuple[int, str, JSONDict]], state: Any, version: int
    ) -> tuple[Any, int]:
        """Replay ``events`` (those after ``version``) page by page; return state and version."""
        page: Page = []
        async for item in events:
            page.append(item)
            if len(page) == _PAGE:
                state, version = self.replay(state, version, page)
                page = []
        return self.replay(state, version, page)

    def decode_snapshot(self, snapshot: SnapshotRecord) -> tuple[Any] | None:
        """Return ``(state,)`` from a usable snapshot, or None (with a log line) if unusable.

        A snapshot of an older schema version is upcast when the decider has an upcaster for
        every step to its current version; a newer one, or one without that chain, is ignored
        (the stream is replayed from the start).
        """
        decider = self.decider
        stored, current = snapshot.schema_version, decider.snapshot_version
        upcasters = decider.snapshot_upcasters
        if stored != current:
            missing = [step for step in range(stored, current) if step not in upcasters]
            if stored > current or missing:
                reason = (
                    "the snapshot is newer than the aggregate"
                    if stored > current
                    else f"no snapshot upcaster for version {', '.join(map(str, missing))}"
                )
                logger.info(
                    "ignoring snapshot of another schema version",
                    extra={
                        "stream_id": self.stream_id,
                        "snapshot_version": stored,
                        "expected": current,
                        "reason": reason,
                    },
                )
                return None
        try:
            state = self.codec.decode_state(
                snapshot.state,
                decider.state_type,
                from_version=stored,
                to_version=current,
                upcasters=upcasters,
            )
        except CodecError as exc:
            logger.warning(
                "snapshot cannot be decoded; replaying the stream from the start",
                extra={
                    "stream_id": self.stream_id,
                    "version": snapshot.version,
                    "error": str(exc),
                },
            )
            return None
        return (state,)

    def replay(self, state: Any, version: int, events: Page) -> tuple[Any, int]:
        """Apply stored events to ``state``; return the new state and version."""
        decode = self.codec.decode_event
        evolve = self.decider.evolve
        for stored_version, type_name, data in events:
            if stored_version != version + 1 or type_name == TOMBSTONE_TYPE:
                self.refuse(stored_version, type_name, data, version)
            try:
                event = decode(type_name, data)
            except CodecError:
                # decode again for an error that names the place (rare: it fails anyway)
                decode(type_name, data, where=self.where(stored_version))
                raise
            try:
                state = evolve(state, event)
            except Exception as exc:
                msg = (
                    f"applying stored event {type_name}{self.where(stored_version)} raised "
                    f"{type(exc).__name__}: {exc}"
                )
                raise ActorFailedError(self.stream_id, msg) from exc
            version = stored_version
        return state, version

    def refuse(self, stored_version: int, type_name: str, data: JSONDict, version: int) -> None:
        """Raise for a stream that cannot be rebuilt: deleted, or archived before its
        snapshot (the events after ``version`` start at ``stored_version``)."""
        if type_name == TOMBSTONE_TYPE:
            hard = bool(data.get("hard"))
            raise StreamDeletedError(self.stream_id, hard=hard, version=stored_version)
        wanted = f"the events after version {version} (to rebuild its state)"
        raise StreamArchivedError(self.stream_id, stored_version, wanted=wanted)

    def where(self, version: int) -> str:
        return f" (stream {self.stream_id!r}, version {version})"
