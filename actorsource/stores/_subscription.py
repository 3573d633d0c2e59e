"""Catch-up subscriptions: history in batches, then live, without a gap or a repeat."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection

from .._records import StoredEvent
from ._base import EventStore, poll_for_events


async def subscribe(
    store: EventStore,
    from_position: int = 1,
    *,
    types: Collection[str] | None = None,
    categories: Collection[str] | None = None,
    poll_interval: float = 0.5,
) -> AsyncIterator[StoredEvent]:
    """Yield the store's events from ``from_position`` on, forever: history, then live.

    Each round reads up to the head it saw (in pages), then waits for the next commit: this
    process's appends wake it at once, other processes' are found every ``poll_interval``
    seconds. Positions are in commit order (with gaps only where events were archived), so
    nothing is skipped or repeated.
    Stop by leaving the ``async for`` (or cancelling it); resume later from the last
    position + 1.

    :raises ValueError: if ``from_position`` < 1 or ``poll_interval`` <= 0
    """
    if not isinstance(from_position, int) or from_position < 1:
        msg = f"from_position must be an int >= 1, got {from_position!r}"
        raise ValueError(msg)
    if not poll_interval > 0:
        msg = f"poll_interval must be > 0 seconds, got {poll_interval!r}"
        raise ValueError(msg)
    done = from_position - 1
    while True:
        head = await store.head_position()
        if head > done:
            async for event in store.read_all(
                done + 1, to_position=head, types=types, categories=categories
            ):
                yield event
            done = head
        await poll_for_events(store, done, poll_interval)
