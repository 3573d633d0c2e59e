"""The store's routes the actors use, resolved once from its declared capabilities.

Each is the store's faster route where it declares one (:class:`StoreCapabilities`), else one
made from the core contract: the actors never ask what a store can do.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

from ._errors import FencedError, StoreError
from ._records import AppendResult, JSONDict, NewEvent
from ._timers import TimerChange
from .stores._base import ClusterStore, EventStore, Fence, Latest, StoreCapabilities

logger = logging.getLogger("actorsource.runtime")

#: told the outcome of an append at its commit: the result, or the error for that append
OnAppended = Callable[[AppendResult | BaseException], None]
#: an actor's append: stream, expected version, events, and whom to tell at the commit
Appender = Callable[[str, int, list[NewEvent], OnAppended], None]
#: an actor's append with timer writes, committed together
TimedAppender = Callable[[str, int, list[NewEvent], list[TimerChange], OnAppended], None]


def latest_loader(
    store: EventStore, capabilities: StoreCapabilities
) -> Callable[[str], Awaitable[Latest]]:
    """Return the store's one-read activation load if it has one, else ``load_snapshot``."""
    if capabilities.load_latest is not None:
        return capabilities.load_latest

    async def snapshot_only(stream_id: str) -> Latest:
        return await store.load_snapshot(stream_id), [], False

    return snapshot_only


def data_reader(
    store: EventStore, capabilities: StoreCapabilities
) -> Callable[[str, int], AsyncIterator[tuple[int, str, JSONDict]]]:
    """Return the store's lean replay read if it has one, else one made from ``read_stream``."""
    if capabilities.read_stream_data is not None:
        return capabilities.read_stream_data

    async def from_records(
        stream_id: str, from_version: int
    ) -> AsyncIterator[tuple[int, str, JSONDict]]:
        async for stored in store.read_stream(stream_id, from_version):
            yield stored.version, stored.type, stored.data

    return from_records


def no_burst() -> contextlib.AbstractContextManager[None]:
    """The burst of a store without bursts: nothing to wait for."""
    return contextlib.nullcontext()


#: the context variables actor callbacks run in (none set)
_ACTOR_CONTEXT: Final = contextvars.Context()


def appender(store: EventStore, capabilities: StoreCapabilities) -> Appender:
    """Return the store's callback append if it has one (``append_then``), else one made from
    its non-async ``submit_append`` or from ``append``, calling back when the future is done."""
    if capabilities.append_then is not None:
        return capabilities.append_then
    submit = capabilities.submit_append

    def via_future(
        stream_id: str,
        expected_version: int,
        events: list[NewEvent],
        on_done: OnAppended,
    ) -> None:
        future: asyncio.Future[AppendResult] = (
            submit(stream_id, expected_version, events)
            if submit is not None
            else asyncio.ensure_future(store.append(stream_id, expected_version, events))
        )
        # the actor's work never runs in a caller's context variables
        future.add_done_callback(
            functools.partial(_call_back, stream_id, on_done), context=_ACTOR_CONTEXT
        )

    return via_future


def _call_back(
    stream_id: str,
    on_done: OnAppended,
    future: asyncio.Future[AppendResult],
) -> None:
    if future.cancelled():
        outcome: AppendResult | BaseException = StoreError(
            f"the append to {stream_id!r} was cancelled"
        )
    else:
        error = future.exception()
        outcome = error if error is not None else future.result()
    try:
        on_done(outcome)
    except Exception:  # a crashed actor, logged by it too: logged, as the SQLite store does
        logger.exception("an append's callback failed", extra={"stream_id": stream_id})


def fenced_appender(
    cluster: ClusterStore,
    shard_of: Callable[[str], int],
    fence_for: Callable[[str], Fence | None],
    on_fenced: Callable[[FencedError], None],
) -> Appender:
    """Return the append of a clustered runtime: every append carries the fence of this
    member's lease on the stream's shard, checked by the store as the events commit.

    An append this member holds no lease for is refused at once; one fenced off by the store
    (the lease moved on) is reported to ``on_fenced`` before its actor hears of it.
    """

    def append_fenced(
        stream_id: str,
        expected_version: int,
        events: list[NewEvent],
        on_done: OnAppended,
    ) -> None:
        fence = _held_fence(stream_id, fence_for, shard_of)
        future = cluster.submit_fenced_append(stream_id, expected_version, events, fence)
        _answer_fenced(future, stream_id, on_done, on_fenced)

    return append_fenced


def fenced_timed_appender(
    cluster: ClusterStore,
    shard_of: Callable[[str], int],
    fence_for: Callable[[str], Fence | None],
    on_fenced: Callable[[FencedError], None],
) -> TimedAppender:
    """Return the append with timer writes of a clustered runtime: fenced as
    :func:`fenced_appender`'s appends are, in the transaction of the events and timers."""

    def append_timed_fenced(
        stream_id: str,
        expected_version: int,
        events: list[NewEvent],
        changes: list[TimerChange],
        on_done: OnAppended,
    ) -> None:
        fence = _held_fence(stream_id, fence_for, shard_of)
        future = asyncio.ensure_future(
            cluster.append_fenced_with_timers(stream_id, expected_version, events, changes, fence)
        )
        _answer_fenced(future, stream_id, on_done, on_fenced)

    return append_timed_fenced


def _held_fence(
    stream_id: str,
    fence_for: Callable[[str], Fence | None],
    shard_of: Callable[[str], int],
) -> Fence:
    """The fence of this member's lease on the stream's shard; without a lease, the append
    is refused at once (nothing reaches the store)."""
    fence = fence_for(stream_id)
    if fence is None:
        raise FencedError(stream_id, shard_of(stream_id), 0, None)
    return fence


def _answer_fenced(
    future: asyncio.Future[AppendResult],
    stream_id: str,
    on_done: OnAppended,
    on_fenced: Callable[[FencedError], None],
) -> None:
    """Call the actor back when a fenced append is done, a fence refusal reported first."""
    future.add_done_callback(
        functools.partial(_fenced_back, stream_id, on_done, on_fenced), context=_ACTOR_CONTEXT
    )


def _fenced_back(
    stream_id: str,
    on_done: OnAppended,
    on_fenced: Callable[[FencedError], None],
    future: asyncio.Future[AppendResult],
) -> None:
    if not future.cancelled():
        error = future.exception()
        if isinstance(error, FencedError):
            try:
                on_fenced(error)
            except Exception:
                logger.exception("a fenced append's report failed", extra={"stream_id": stream_id})
    _call_back(stream_id, on_done, future)


def timed_appender(store: EventStore, capabilities: StoreCapabilities) -> TimedAppender:
    """Return the append with timer writes of a store that keeps timers (calling back when
    it is done, as :func:`appender`'s route does), else one that refuses at once."""
    timers = capabilities.timers

    def append_timed(
        stream_id: str,
        expected_version: int,
        events: list[NewEvent],
        changes: list[TimerChange],
        on_done: OnAppended,
    ) -> None:
        if timers is None:
            msg = (
                f"{store!r} keeps no durable timers (its capabilities declare none), so a "
                "handler cannot schedule or cancel one there; use a store that does"
            )
            raise ValueError(msg)
        future = asyncio.ensure_future(
            timers.append_with_timers(stream_id, expected_version, events, changes)
        )
        future.add_done_callback(
            functools.partial(_call_back, stream_id, on_done), context=_ACTOR_CONTEXT
        )

    return append_timed
