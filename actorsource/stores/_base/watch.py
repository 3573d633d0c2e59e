"""The newest commit a store has seen, and readers waiting for a newer one."""

from __future__ import annotations

import asyncio
import contextlib

from ..._errors import StoreError, WaitTimeoutError
from .contract import EventStore


class HeadWatch:
    """The newest position a store committed, and waiters for a newer one.

    Stores advance it after each commit, so that in-process subscribers wake at once instead
    of polling.
    """

    __slots__ = ("_closed", "_waiters", "head")

    def __init__(self) -> None:
        #: the highest position known to be committed
        self.head = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._closed: StoreError | None = None

    def advance(self, head: int) -> None:
        """Record that ``head`` is committed and wake every waiter if it is new."""
        if head <= self.head:
            return
        self.head = head
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def close(self, error: StoreError) -> None:
        """Fail every waiter, and every later wait, with ``error`` (the store closed)."""
        self._closed = error
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)

    async def wait_beyond(self, position: int, timeout: float) -> None:  # noqa: ASYNC109  # the deadline is the contract's
        """Return when the head passes ``position``.

        :raises WaitTimeoutError: after ``timeout`` seconds
        :raises StoreError: when the store closes (given to :meth:`close`)
        """
        if self.head > position:
            return
        if self._closed is not None:
            raise self._closed
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                waiter.result()  # woken (or closed) as the time ran out: that counts
                return
            raise WaitTimeoutError(
                "the store's log",
                target=position + 1,
                reached=self.head,
                timeout=timeout,
                detail=" (the newest commit this store object has seen)",
            ) from None
        finally:
            if not waiter.done():
                waiter.cancel()
                if waiter in self._waiters:
                    self._waiters.remove(waiter)


async def poll_for_events(store: EventStore, after_position: int, interval: float) -> None:
    """Wait up to ``interval`` seconds for an event beyond ``after_position`` (then read again).

    For readers that poll: a timeout is their next round, not an error.
    """
    with contextlib.suppress(WaitTimeoutError):
        await store.wait_for_events(after_position, interval)
