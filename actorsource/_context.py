"""Counting for a runtime's actors: its counters, and places taken in turn (slots)."""

from __future__ import annotations

import asyncio
from collections import deque

import attrs


@attrs.define(slots=True)
class Counters:
    """The runtime's mutable counters; ``Runtime.statistics()`` copies them."""

    activations: int = 0
    passivations: int = 0
    commands_processed: int = 0
    commands_rejected: int = 0
    events_appended: int = 0
    events_replayed: int = 0
    snapshots_saved: int = 0
    conflicts_retried: int = 0
    actor_failures: int = 0


class Slots:
    """A count of places (activation loads at once, actors in memory), taken in turn.

    A semaphore that can also be taken without waiting (:meth:`try_take`), so that an actor
    that need not wait goes on from a callback, with no task; and one that counts the places
    taken. ``count=None`` is no limit.
    """

    __slots__ = ("_free", "taken", "waiters")

    def __init__(self, count: int | None) -> None:
        self._free = count
        #: those waiting for a place, in turn
        self.waiters: deque[asyncio.Future[None]] = deque()
        #: places taken now
        self.taken = 0

    @property
    def waiting(self) -> bool:
        """Whether someone waits for a place."""
        return bool(self.waiters)

    def try_take(self) -> bool:
        """Take a place if one is free and nobody waits for one; return whether it was."""
        if self.waiters:
            return False
        if self._free is not None:
            if self._free <= 0:
                return False
            self._free -= 1
        self.taken += 1
        return True

    async def take(self) -> None:
        """Take a place, waiting in turn for one."""
        if self.try_take():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give_back()  # handed to us as we were cancelled: pass it on
            raise

    def give_back(self) -> None:
        """Return a place: to the first waiter still waiting, else to the free ones."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the place passes on: still taken
                return
        self.taken -= 1
        if self._free is not None:
            self._free += 1
