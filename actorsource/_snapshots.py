"""Snapshots: taken as a stream grows (the aggregate's or the runtime's policy says when), or on
demand (``ref.snapshot()``), each save pruning the stream's older ones if the policy keeps N."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from ._codec import Codec
from ._context import Counters
from ._decider import Decider
from ._errors import CodecError, SnapshotError
from ._policies import SnapshotEvery, SnapshotInterval, SnapshotPolicy
from ._records import SnapshotRecord
from .stores._base import EventStore

logger = logging.getLogger("actorsource.actor")


class SnapshotContext(Protocol):
    """What taking a snapshot uses of the actors' shared context."""

    store: EventStore
    codec: Codec
    counters: Counters
    snapshot: SnapshotPolicy | None
    spawn: Callable[[Coroutine[Any, Any, None]], None]


class Snapshotted(Protocol):
    """What taking a snapshot uses of an actor."""

    @property
    def context(self) -> SnapshotContext: ...
    @property
    def decider(self) -> Decider[Any, Any, Any]: ...
    @property
    def stream_id(self) -> str: ...
    @property
    def state(self) -> Any: ...
    @property
    def version(self) -> int: ...

    #: the policy clock's time of the actor's last snapshot (or of its first append after its
    #: load); None before that
    snapshot_at: float | None


def snapshot_if_due(actor: Snapshotted, previous_version: int) -> None:
    """After an append took the actor's stream from ``previous_version`` to its version: save a
    snapshot of its state in the background if the aggregate's ``snapshot_every`` (else the
    runtime's policy) says one is due. A state that cannot be encoded is skipped with a
    warning."""
    context, version = actor.context, actor.version
    policy = context.snapshot
    every = actor.decider.snapshot_every
    if every:
        if version // every == previous_version // every:
            return
    elif isinstance(policy, SnapshotEvery):
        if not policy.due(previous_version, version):
            return
    elif policy is not None:  # SnapshotInterval
        now = policy.clock()
        since = actor.snapshot_at
        if since is None:  # the interval counts from the first append after the load
            actor.snapshot_at = now
            return
        if now - since < policy.seconds:
            return
        actor.snapshot_at = now
    else:
        return
    try:
        encoded = context.codec.encode_state(actor.state)
    except CodecError as exc:
        logger.warning(
            "snapshot skipped: state cannot be encoded",
            extra={"stream_id": actor.stream_id, "error": str(exc)},
        )
        return
    record = SnapshotRecord(actor.stream_id, version, encoded, actor.decider.snapshot_version)
    context.spawn(_save(context, record, None))


def take_snapshot(actor: Snapshotted, reply: asyncio.Future[int]) -> None:
    """Save a snapshot of the actor's state now (in its mailbox order); ``reply`` gets its
    version once it is saved, or the error (the actor goes on either way)."""
    if actor.version == 0:
        reply.set_exception(SnapshotError(actor.stream_id, "the stream has no events"))
        return
    try:
        encoded = actor.context.codec.encode_state(actor.state)
    except CodecError as exc:
        reply.set_exception(exc)
        return
    policy = actor.context.snapshot
    if isinstance(policy, SnapshotInterval):  # the interval counts from this one
        actor.snapshot_at = policy.clock()
    record = SnapshotRecord(actor.stream_id, actor.version, encoded, actor.decider.snapshot_version)
    actor.context.spawn(_save(actor.context, record, reply))


async def _save(
    context: SnapshotContext, record: SnapshotRecord, reply: asyncio.Future[int] | None
) -> None:
    keep = None if context.snapshot is None else context.snapshot.keep
    try:
        if keep is None:  # as stores written before keep= was in the contract are called
            await context.store.save_snapshot(record)
        else:
            await context.store.save_snapshot(record, keep=keep)
    except Exception as exc:
        logger.warning(
            "snapshot save failed",
            extra={"stream_id": record.stream_id, "version": record.version, "error": str(exc)},
        )
        if reply is not None and not reply.done():
            reply.set_exception(exc)
        return
    context.counters.snapshots_saved += 1
    if reply is not None and not reply.done():
        reply.set_result(record.version)
