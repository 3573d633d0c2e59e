"""Snapshots taken as a stream grows, as the aggregate's or the runtime's policy says."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from ._codec import Codec
from ._context import Counters
from ._decider import Decider
from ._errors import CodecError
from ._policies import SnapshotEvery
from ._records import SnapshotRecord
from .stores._base import EventStore

logger = logging.getLogger("actorsource.actor")


class SnapshotContext(Protocol):
    """What taking a snapshot uses of the actors' shared context."""

    store: EventStore
    codec: Codec
    counters: Counters
    snapshot: SnapshotEvery | None
    spawn: Callable[[Coroutine[Any, Any, None]], None]


def snapshot_if_due(
    context: SnapshotContext,
    decider: Decider[Any, Any, Any],
    stream_id: str,
    state: Any,
    *,
    previous_version: int,
    version: int,
) -> None:
    """After an append took a stream from ``previous_version`` to ``version``: save a snapshot
    of ``state`` in the background if the aggregate's ``snapshot_every`` (else the runtime's
    policy) says one is due. A state that cannot be encoded is skipped with a warning."""
    every = decider.snapshot_every
    if every:
        if version // every == previous_version // every:
            return
    elif context.snapshot is None or not context.snapshot.due(previous_version, version):
        return
    try:
        encoded = context.codec.encode_state(state)
    except CodecError as exc:
        logger.warning(
            "snapshot skipped: state cannot be encoded",
            extra={"stream_id": stream_id, "error": str(exc)},
        )
        return
    record = SnapshotRecord(stream_id, version, encoded, decider.snapshot_version)
    context.spawn(_save(context, record))


async def _save(context: SnapshotContext, record: SnapshotRecord) -> None:
    try:
        await context.store.save_snapshot(record)
    except Exception as exc:
        logger.warning(
            "snapshot save failed",
            extra={"stream_id": record.stream_id, "version": record.version, "error": str(exc)},
        )
        return
    context.counters.snapshots_saved += 1
