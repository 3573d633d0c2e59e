"""Delivering durable timers: claim the due ones with a lease, deliver, mark them done.

One task per runtime given :class:`Timers`. A round claims what is due (a claim with a lease in
the store, so that of several runtimes on one store each timer goes to one), delivers each
claimed timer as a command whose ``command_id`` comes from its key and due time, and then drops
it or moves a recurring one to its next tick. A claimer that dies leaves its claims to lapse;
the next claimer delivers them again, and the ``command_id`` makes the repeat take effect once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime, timedelta

import anyio

from ._codec import Codec
from ._errors import (
    ActorFailedError,
    CodecError,
    ConcurrencyError,
    RuntimeClosedError,
    StoreError,
)
from ._metrics import TIMER_LATENESS, TIMERS_DUE, TIMERS_LATE, Metrics
from ._reading import Deciders
from ._refs import AggregateRef, Mailboxes
from ._timers import StoredTimer, TimerChange, Timers, TimerSchedule
from .stores._base import EventStore, StoreCapabilities, TimerStore

logger = logging.getLogger("actorsource.timers")

#: errors after which a tick is delivered again (once its claim lapses): the command may not
#: have been decided. Any other outcome (events, a rejection, a handler's error) ends the tick.
RETRIED = (
    ActorFailedError,
    CodecError,
    ConcurrencyError,
    RuntimeClosedError,
    StoreError,
    TimeoutError,
)


class TimerScheduler:
    """Claims and delivers one runtime's due timers."""

    def __init__(
        self,
        store: TimerStore,
        policy: Timers,
        deliver: Callable[[StoredTimer], Awaitable[None]],
        categories: Callable[[], Collection[str]],
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.policy = policy
        self.clock = policy.clock
        #: this runtime's name in the claims it holds
        self.claimant = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._store = store
        self._deliver = deliver
        self._categories = categories
        self._metrics = metrics
        #: one round at a time: fire_due waits for the background round in progress
        self._round = asyncio.Lock()
        self._wake = asyncio.Event()
        #: when the loop means to look next (None: it is not sleeping)
        self._next_look: datetime | None = None
        #: the time a timer stored here woke the loop (its round looks as of then)
        self._woken_at: datetime | None = None
        #: ticks delivered (and marked done) by this runtime
        self.delivered = 0

    def stored(self, changes: list[TimerChange]) -> None:
        """Wake the loop if a timer stored here is due before it means to look."""
        next_look = self._next_look
        if next_look is None:
            return
        for change in changes:
            if isinstance(change, TimerSchedule) and change.due_at < next_look:
                # the round looks as of now, not as of when it gets to run: what came due
                # later is the next round's (a fake clock may move in between)
                self._woken_at = self.clock.now()
                self._wake.set()
                return

    async def run(self) -> None:
        """Deliver due timers until cancelled."""
        clock = self.clock
        poll = timedelta(seconds=self.policy.poll_interval)
        now: datetime | None = None
        while True:
            try:
                await self._fire_due(now)
            except Exception:  # a store failure: logged, and tried again at the next look
                logger.exception("delivering due timers failed")
            self._wake.clear()
            self._woken_at = None
            self._next_look = clock.now() + poll
            async with anyio.create_task_group() as group:

                async def sleep() -> None:
                    assert self._next_look is not None
                    await clock.sleep_until(self._next_look)
                    group.cancel_scope.cancel()

                async def woken() -> None:
                    await self._wake.wait()
                    group.cancel_scope.cancel()

                group.start_soon(sleep)
                group.start_soon(woken)
            self._next_look = None
            now = self._woken_at  # None: the clock woke it, and it looks as of its time

    async def fire_due(self) -> int:
        """Deliver every timer due now (by the clock) that nobody else holds; return how many
        ticks this runtime delivered while the call ran.

        Waits for a round already under way first (its ticks count too), so that on return
        every timer due now was delivered, or is held by another claimant, or failed and
        waits for its lease to lapse.
        """
        return await self._fire_due(self.clock.now())

    async def _fire_due(self, at: datetime | None) -> int:
        """:meth:`fire_due` as of ``at`` (None: the clock's time at each claim)."""
        before = self.delivered
        async with self._round:
            while True:
                now = self.clock.now() if at is None else at
                claimed = await self._store.claim_due_timers(
                    self.claimant,
                    now,
                    self.policy.lease,
                    limit=self.policy.max_claim,
                    categories=self._categories(),
                )
                if not claimed:
                    break
                self._report(claimed, now)
                results: list[bool] = []
                async with anyio.create_task_group() as group:
                    for timer in claimed:
                        group.start_soon(self._fire, timer, results)
                if not any(results):
                    break  # the rest failed: they wait for their leases
        return self.delivered - before

    async def _fire(self, timer: StoredTimer, results: list[bool]) -> None:
        try:
            await self._deliver(timer)
        except RETRIED as exc:
            logger.warning(
                "timer delivery failed; it is delivered again when its claim lapses",
                extra={
                    "owner": timer.owner,
                    "key": timer.key,
                    "target": timer.target,
                    "error": f"{type(exc).__name__}: {exc}",
                },
            )
            results.append(False)
            return
        except Exception as exc:  # decided: a rejection or the handler's own error
            logger.info(
                "timer's command refused",
                extra={
                    "owner": timer.owner,
                    "key": timer.key,
                    "target": timer.target,
                    "error": f"{type(exc).__name__}: {exc}",
                },
            )
        next_due = timer.next_due(self.clock.now())
        await self._store.finish_timer(timer, self.claimant, next_due)
        self.delivered += 1
        results.append(True)

    def _report(self, claimed: list[StoredTimer], now: datetime) -> None:
        metrics = self._metrics
        if metrics is None:
            return
        late_after = self.policy.poll_interval
        for timer in claimed:
            labels = {"category": timer.target.partition("-")[0]}
            lateness = (now - timer.due_at).total_seconds()
            metrics.add(TIMERS_DUE, 1, labels)
            metrics.record(TIMER_LATENESS, lateness, labels)
            if lateness > late_after:
                metrics.add(TIMERS_LATE, 1, labels)


def timer_scheduler(
    store: EventStore,
    capabilities: StoreCapabilities,
    timers: Timers,
    *,
    deciders: Deciders,
    codec: Codec,
    mailboxes: Mailboxes,
) -> TimerScheduler:
    """Return the scheduler of a runtime given ``timers=``, delivering through its mailboxes.

    :raises ValueError: if the store keeps no timers
    """
    store_timers = capabilities.timers
    if store_timers is None:
        msg = (
            f"Runtime(timers=...) needs a store that keeps durable timers, and {store!r} "
            "declares none in its capabilities"
        )
        raise ValueError(msg)
    for aggregate in timers.aggregates:
        deciders.decider_of(aggregate)

    async def deliver(timer: StoredTimer) -> None:
        """Deliver one tick as a command with its deterministic ``command_id``."""
        category, _, aggregate_id = timer.target.partition("-")
        decider = deciders.in_category(category)
        if decider is None:  # claims ask only for the categories used here
            msg = f"timer {timer.key!r} of {timer.owner!r}: no aggregate of {category!r} here"
            raise CodecError(msg, type_name=timer.command_type)
        kinds = {kind.__name__: kind for kind in decider.command_types}
        kind = kinds.get(timer.command_type)
        if kind is None:
            msg = (
                f"timer {timer.key!r} of {timer.owner!r} holds a {timer.command_type} command, "
                f"which {decider.name} does not handle (its commands: {', '.join(kinds)})"
            )
            raise CodecError(msg, type_name=timer.command_type)
        command = codec.decode_command(kind, timer.data)
        ref = AggregateRef(mailboxes, decider, aggregate_id, timer.target)
        await ref.ask(command, command_id=timer.command_id, timeout=timers.lease)

    return TimerScheduler(
        store_timers, timers, deliver, deciders.categories, metrics=mailboxes.metrics
    )
