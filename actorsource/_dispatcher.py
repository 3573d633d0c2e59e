"""The dispatcher: a runtime's live actors, their mailboxes, admission and passivation.

It owns which actors are in memory (``max_active`` admission, idle passivation, the
passivation timer), hands each message to its actor's mailbox, and schedules draining: an
``ask`` to an idle actor is decided in the sender's step, other messages on the next loop
step, one callback for every actor made ready in that step. Actors call back through the
hooks of their :class:`~actorsource._actor.ActorContext` (admit, on_idle, start_task, spawn).
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import logging
from collections import OrderedDict, deque
from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from ._actor import Actor, ActorContext
from ._context import Slots
from ._errors import MailboxFullError, RuntimeClosedError, StoreError
from ._messages import Message
from ._metrics import PASSIVATIONS, Metrics
from ._policies import Passivation, check_seconds

if TYPE_CHECKING:
    from ._refs import AggregateRef

logger = logging.getLogger("actorsource.runtime")


class RuntimeState(enum.Enum):
    """The lifecycle of a runtime: it can be entered once."""

    #: made, not entered yet: refs can be made, messages cannot be sent
    UNOPENED = "unopened"
    #: serving messages
    OPEN = "open"
    #: leaving its context: finishing what was accepted, refusing new messages
    CLOSING = "closing"
    #: closed for good
    CLOSED = "closed"


class Dispatcher:
    """The live actors of one runtime (see the module docstring)."""

    def __init__(
        self,
        passivation: Passivation,
        *,
        ask_timeout: float | None,
        shutdown_timeout: float | None,
        metrics: Metrics | None,
    ) -> None:
        #: the runtime's lifecycle (the runtime moves it; sends check it)
        self.state = RuntimeState.UNOPENED
        #: set by the runtime once made: what every actor shares (its hooks point here)
        self.context: ActorContext
        #: the default limit of ``ask`` (seconds; None: wait as long as it takes)
        self.ask_timeout = ask_timeout
        #: how long closing may drain before the rest is abandoned (None: no limit)
        self.shutdown_timeout = shutdown_timeout
        #: where counters and histograms go (None: nowhere)
        self.metrics = metrics
        self._passivate_after = passivation.idle_after
        #: whether idle actors are kept in LRU order (only a timer or a cap needs it)
        self._track_idle = passivation.idle_after is not None or passivation.max_active is not None
        self._actors: dict[str, Actor] = {}
        self._actors_high = 0  # the most actors held since the maps were last compacted
        #: loaded actors with no task and an empty mailbox, least recently used first
        self._idle: OrderedDict[str, Actor] = OrderedDict()
        #: places of actors in memory (max_active): taken by an admitted actor
        self._admission = Slots(passivation.max_active)
        self._tasks: set[asyncio.Task[None]] = set()
        #: actors with messages to drain on the next loop step (see _schedule)
        self._ready: deque[Actor] = deque()
        self._ready_scheduled = False
        #: actors are draining now (a message sent meanwhile waits for the next step)
        self._draining = False
        #: actors with work scheduled or under way; closing waits for zero
        self._busy = 0
        self._all_idle = asyncio.Event()
        self._idle_changed = asyncio.Event()
        self._task_group: anyio.abc.TaskGroup | None = None
        self._timer_scope = anyio.CancelScope()

    @property
    def active(self) -> int:
        """Actors holding their state in memory now."""
        return self._admission.taken

    @property
    def queued(self) -> int:
        """Messages waiting in mailboxes now."""
        return sum(len(a.mailbox) for a in self._actors.values())

    @property
    def passivate_after(self) -> float | None:
        """Seconds an actor may stay idle before it leaves memory (None: never)."""
        return self._passivate_after

    @passivate_after.setter
    def passivate_after(self, value: float | None) -> None:
        self._passivate_after = check_seconds("passivate_after", value, zero=True, optional=True)
        if value is not None and not self._track_idle:
            self._track_idle = True  # idle actors were not kept in order: those idle now are
            if self.state is RuntimeState.OPEN:
                _adopt_idle(self._actors.values(), self._idle)
        if self.state is RuntimeState.OPEN:
            self._timer_scope.cancel()  # a timer running sleeps until the old deadline
            self._start_timer()

    def _start_timer(self) -> None:
        if self._passivate_after is not None and self._task_group is not None:
            self._timer_scope = scope = anyio.CancelScope()
            self._task_group.start_soon(self.run_timer, scope, name="actorsource passivation")

    def open(self, task_group: anyio.abc.TaskGroup) -> None:
        """Serve messages; run background work (the passivation timer, snapshot saves) in
        ``task_group``."""
        self._idle_changed = asyncio.Event()
        self._task_group = task_group
        self._start_timer()
        self.state = RuntimeState.OPEN

    async def close(self, cancel_everything: Any) -> None:
        """Process what was accepted (within the shutdown deadline), then stop the timer.

        :param cancel_everything: called if the store does not answer in time either
        """
        self.state = RuntimeState.CLOSING
        # stop idle actors now; busy ones stop as their mailboxes drain (see on_idle)
        self.passivate_idle()
        with anyio.move_on_after(self.shutdown_timeout) as deadline:
            await self.wait_all_idle()
        if deadline.cancelled_caught:
            self.abandon()
            # appends already handed to the store may still finish: one more deadline
            with anyio.move_on_after(self.shutdown_timeout) as grace:
                await self.wait_all_idle()
            if grace.cancelled_caught:
                self.abandon_in_flight()
                cancel_everything()  # snapshot saves on a hung store too
        self._timer_scope.cancel()

    def cancel_tasks(self) -> None:
        """Cancel the actors' waiting steps (closing failed)."""
        for task in self._tasks:
            task.cancel()

    async def wait_all_idle(self) -> None:
        while self._busy:
            self._all_idle.clear()
            await self._all_idle.wait()

    def abandon(self) -> None:
        """The shutdown deadline passed: fail every message not yet taken, and say which."""
        left: dict[str, int] = {}
        for actor in list(self._actors.values()):
            count = len(actor.mailbox) + len(actor.overflow or ())
            if count:
                left[actor.stream_id] = count
                actor.fail_queued(
                    RuntimeClosedError(
                        f"the runtime closed before this message to {actor.stream_id!r} was "
                        f"processed (shutdown deadline of {self.shutdown_timeout} s passed)"
                    )
                )
        for task in list(self._tasks):  # activations and conflict backoffs
            task.cancel()
        logger.warning(
            "shutdown deadline passed: %d message(s) to %d aggregate(s) not processed",
            sum(left.values()),
            len(left),
            extra={"deadline": self.shutdown_timeout, "abandoned": left},
        )

    def abandon_in_flight(self) -> None:
        """The store did not answer in time either: its callers are told the outcome is unknown."""
        streams = []
        for actor in list(self._actors.values()):
            if actor.in_flight is not None:
                streams.append(actor.stream_id)
                batch = actor.in_flight.batch
                error = StoreError(
                    f"the runtime closed while an append to {actor.stream_id!r} was in flight; "
                    "the store did not answer in time, so the outcome is unknown"
                )
                for message in batch:
                    future = message.reply
                    if future is not None and not future.done():
                        future.set_exception(error)
        logger.error(
            "shutdown: the store did not finish %d append(s) in time",
            len(streams),
            extra={"streams": streams},
        )

    def _actor_for(self, ref: AggregateRef[Any]) -> Actor:
        if self.state is not RuntimeState.OPEN:
            raise RuntimeClosedError(self.closed_message(ref.stream_id))
        actor = self._actors.get(ref.stream_id)
        if actor is None:
            actor = Actor(self.context, ref.decider, ref.stream_id)
            self._actors[ref.stream_id] = actor
            self._actors_high = max(self._actors_high, len(self._actors))
        return actor

    def _enqueue(self, actor: Actor, message: Message) -> None:
        actor.mailbox.append(message)
        if not actor.running:
            self._mark_running(actor)
            self._schedule(actor)

    def _mark_running(self, actor: Actor) -> None:
        """Count an idle actor as busy (it has a message to drain) and no longer idle."""
        actor.running = True
        self._busy += 1
        self._idle.pop(actor.stream_id, None)

    def _schedule(self, actor: Actor) -> None:
        """Drain ``actor`` on the next loop step, so that messages sent meanwhile join its batch.

        Ready actors wait in one queue drained by one callback: a loop step costs one handle,
        however many actors became ready in it.
        """
        self._ready.append(actor)
        if not self._ready_scheduled:
            self._ready_scheduled = True
            asyncio.get_running_loop().call_soon(self._drain_ready)

    def _drain_ready(self) -> None:
        self._ready_scheduled = False
        ready = self._ready
        # the appends of all these actors go to the writer together, as soon as they are made
        self._draining = True
        try:
            with self.context.burst():
                # only those ready now: actors made ready while draining wait for the next step
                for _ in range(len(ready)):
                    actor = ready.popleft()
                    try:
                        actor.drain()
                    except Exception:  # the actor crashed, logged, and failed its callers
                        continue
        finally:
            self._draining = False

    def send(
        self, ref: AggregateRef[Any], message: Message, *, waiting: bool = False
    ) -> asyncio.Future[None] | None:
        """Enqueue a message; if the mailbox is full, return a future to await for room.

        Not a coroutine: the common case (room in the mailbox) costs no coroutine object.

        :param waiting: the sender waits for the outcome (``ask``): an idle actor then takes
            the message in the sender's step, not on the next loop step (nothing could join its
            batch meanwhile that the sender would not wait for anyway)
        """
        if self.state is not RuntimeState.OPEN:
            raise RuntimeClosedError(self.closed_message(ref.stream_id))
        actor = self._actors.get(ref.stream_id) or self._actor_for(ref)
        if len(actor.mailbox) < self.context.mailbox_size and not actor.overflow:
            if not waiting or actor.running or self._draining:
                self._enqueue(actor, message)
                return None
            # an ask to an idle actor: drain it now, in a context of its own (not the sender's
            # context variables), as one burst of writes; inlined here as it runs once per ask
            actor.mailbox.append(message)
            actor.running = True
            self._busy += 1
            if self._idle:
                self._idle.pop(actor.stream_id, None)
            # a flag set and reset here, not a context manager: two Python calls fewer per ask
            self._draining = True
            try:
                with self.context.burst():
                    contextvars.Context().run(actor.drain)
            except Exception:  # the actor crashed, logged, and failed its callers
                pass
            finally:
                self._draining = False
            return None
        # full: wait for room, in arrival order, behind the senders already waiting
        entered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if actor.overflow is None:
            actor.overflow = deque()
        actor.overflow.append((message, entered))
        return entered

    def withdraw(self, stream_id: str, message: Message) -> bool:
        """Take a message back if no actor has taken it yet; return whether it was."""
        actor = self._actors.get(stream_id)
        return actor is not None and _take_back(actor, message)

    def is_live(self, stream_id: str) -> bool:
        """Whether an actor holds (or is loading) the stream's state, so that it can answer
        from memory."""
        actor = self._actors.get(stream_id)
        return actor is not None and (actor.loaded or actor.running)

    async def stored_version(self, stream_id: str) -> int:
        """Return the stream's version as the store has it (no actor involved)."""
        if self.state is not RuntimeState.OPEN:
            raise RuntimeClosedError(self.closed_message(stream_id))
        return await self.context.store.stream_version(stream_id)

    def send_nowait(self, ref: AggregateRef[Any], message: Message) -> None:
        actor = self._actor_for(ref)
        if len(actor.mailbox) >= self.context.mailbox_size or actor.overflow:
            raise MailboxFullError(ref.stream_id, self.context.mailbox_size)
        self._enqueue(actor, message)

    def closed_message(self, stream_id: str) -> str:
        if self.state is RuntimeState.UNOPENED:
            return f"cannot send to {stream_id!r}: the runtime is not open yet (async with it)"
        return f"cannot send to {stream_id!r}: the runtime is {self.state.value}"

    # -- activation limits and passivation -------------------------------------------------------

    def try_admit(self, actor: Actor) -> bool:
        """Admit the actor if it need not wait (under ``max_active``, or an idle actor makes
        room); return whether it was."""
        admission = self._admission
        if not admission.try_take():
            if not self._idle or admission.waiting:
                return False
            _, victim = next(iter(self._idle.items()))
            self._passivate(victim)  # gives its place back
            if not admission.try_take():
                return False
        actor.admitted = True
        return True

    async def admit(self, actor: Actor) -> None:
        if not self.try_admit(actor):
            # every active actor is busy: wait for one to go idle and hand us its place
            await self._admission.take()
        actor.admitted = True

    def on_idle(self, actor: Actor) -> None:
        if actor.mailbox:  # a message arrived as the actor finished
            actor.running = True
            self._schedule(actor)
            return
        self._busy -= 1
        if not self._busy:
            self._all_idle.set()
        if not actor.loaded or self.state is not RuntimeState.OPEN or self._admission.waiters:
            self._passivate(actor)
            return
        if not self._track_idle:
            return  # nothing passivates idle actors: spare the bookkeeping
        actor.idle_since = asyncio.get_running_loop().time()
        self._idle[actor.stream_id] = actor
        if len(self._idle) == 1:
            self._idle_changed.set()

    def _passivate(self, actor: Actor) -> None:
        """Remove an idle actor from memory (it has no task and an empty mailbox)."""
        self._idle.pop(actor.stream_id, None)
        actors = self._actors
        if actors.get(actor.stream_id) is actor:
            del actors[actor.stream_id]
            if self._actors_high > 1024 and len(actors) < self._actors_high // 4:
                self._compact()
        if actor.admitted:
            actor.admitted = False
            if actor.loaded:
                self.context.counters.passivations += 1
                if self.metrics is not None:
                    self.metrics.add(PASSIVATIONS, 1, {"category": actor.decider.name})
            actor.unload()
            self._admission.give_back()

    def _compact(self) -> None:
        # Python dicts never shrink when keys are deleted: after a mass passivation the tables
        # sized for the peak would stay. Copies are sized for what is left (amortized O(1)).
        self._actors = dict(self._actors)
        self._idle = OrderedDict(self._idle)
        self._actors_high = len(self._actors)

    async def run_timer(self, scope: anyio.CancelScope) -> None:
        with scope:
            await self._passivate_when_due()

    async def _passivate_when_due(self) -> None:
        assert self.passivate_after is not None
        timeout = self.passivate_after
        loop = asyncio.get_running_loop()
        while True:
            if not self._idle:
                self._idle_changed.clear()
                await self._idle_changed.wait()
                continue
            now = loop.time()
            while self._idle:
                actor = next(iter(self._idle.values()))
                due = actor.idle_since + timeout
                if due > now:
                    await anyio.sleep(due - now)
                    break
                self._passivate(actor)
            else:
                continue

    def passivate_stream(self, stream_id: str) -> bool:
        """Passivate a stream's live actor if it is idle; return whether it was."""
        actor = self._actors.get(stream_id)
        if actor is None or actor.running or actor.mailbox:
            return False
        self._passivate(actor)
        return True

    def live_streams(self) -> list[str]:
        """The streams that have an actor now (idle, busy or loading)."""
        return list(self._actors)

    def passivate_idle(self) -> int:
        """Passivate every idle actor now (to shed memory); return how many were passivated.

        Busy actors are not touched: they stay until idle, as ``passivate_after`` decides.
        """
        if self._track_idle:
            idle = list(self._idle.values())
        else:
            idle = [a for a in self._actors.values() if not a.running and not a.mailbox]
        for actor in idle:
            self._passivate(actor)
        return len(idle)

    def start_task(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        assert self._task_group is not None
        self._task_group.start_soon(_run_coroutine, coroutine)


async def _run_coroutine(coroutine: Coroutine[Any, Any, None]) -> None:
    await coroutine


def _adopt_idle(actors: Iterable[Actor], idle: OrderedDict[str, Actor]) -> None:
    """Count the loaded actors with nothing to do as idle from now (passivation turned on)."""
    now = asyncio.get_running_loop().time()
    for actor in actors:
        if actor.loaded and not actor.running and not actor.mailbox:
            actor.idle_since = now
            idle[actor.stream_id] = actor


def _take_back(actor: Actor, message: Message) -> bool:
    """Take ``message`` out of the actor's mailbox (or its overflow); return whether it was."""
    for index, queued in enumerate(actor.mailbox):
        if queued is message:
            del actor.mailbox[index]
            return True
    if actor.overflow:
        for index, (queued, entered) in enumerate(actor.overflow):
            if queued is message:
                del actor.overflow[index]
                entered.cancel()
                return True
    return False
