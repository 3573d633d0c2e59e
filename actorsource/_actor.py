"""One aggregate's actor: a mailbox drained by callbacks, not by a task of its own.

An idle actor owns no task: it is its state, its version and an empty deque (most of an idle
actor's memory would otherwise be a task parked on a queue). A message to an idle actor
schedules :meth:`Actor.drain` on the event loop. Draining is synchronous: it decides a batch of
commands and hands their events to the store, which calls the actor back at commit
(:meth:`Actor._appended`), which replies and drains on. Loading is a callback too when nothing
has to wait (:meth:`Actor._load_at_once`). Only the steps that truly wait (admission under
``max_active``, a full set of activation slots, an activation timeout, conflict backoff, stores
without callback calls) run as short tasks. This keeps the per-command cost to a few
callbacks: no task, no coroutine chain per command.

Per batch of commands: decide each against the evolving state, encode and apply the new events
("validate before storing"), append all of them with one expected-version check, then reply.
Replies wait for the commit, since every decision in the batch rests on the events before it.

Idempotent commands (sent with an explicit ``command_id``): an actor remembers the recorded events
of its last few such commands (a window allocated only once one arrives). A command whose id is in
the window is answered from it, without deciding. One whose id is not is first looked up in the
store (the window starts empty after passivation or a restart, and another runtime may have
processed it), in one read for the whole batch; commands without an explicit id never pay for it.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Coroutine, Sequence
from contextlib import AbstractContextManager
from typing import Any

import attrs

from ._activation import Activation
from ._batch import (
    SPARE_OUTCOMES,
    BatchOutcome,
    Known,
    Repeat,
    crash_error,
    decide_batch,
    fail_unanswered,
    log_appended,
    recycle,
    reply,
    reply_error,
    report,
)
from ._codec import Codec
from ._context import Counters, Slots
from ._decider import Decider
from ._errors import (
    ActorFailedError,
    ActorsourceError,
    CodecError,
    ConcurrencyError,
    FencedError,
    ProjectionError,
    StoreError,
    StreamDeletedError,
)
from ._idempotency import IdempotencyWindow, look_up, unknown_ids
from ._messages import Command, GetState, Message, TakeSnapshot
from ._metrics import (
    CONFLICTS_RETRIED,
    Metrics,
)
from ._policies import SnapshotPolicy
from ._records import AppendResult, JSONDict, NewEvent, RecordedEvent, StoredEvent
from ._routes import Appender, TimedAppender
from ._snapshots import snapshot_if_due, take_snapshot
from ._supervision import Supervisor
from ._timers import Clock, SystemClock, TimerChange
from .stores._base import EventStore, Latest

logger = logging.getLogger("actorsource.actor")


@attrs.define(slots=True, eq=False)
class ActorContext:
    """What every actor of one runtime shares: the store, the codec, settings and hooks."""

    store: EventStore
    codec: Codec
    counters: Counters
    #: the runtime's snapshot policy (an aggregate's own ``snapshot_every`` comes first)
    snapshot: SnapshotPolicy | None
    mailbox_size: int
    max_batch: int
    max_conflict_retries: int
    #: limits loads running at once (a burst to many cold aggregates must not stampede)
    activation_slots: Slots
    #: seconds a load may take (None: no limit)
    activation_timeout: float | None
    #: remembers aggregates whose loads keep failing
    supervisor: Supervisor
    #: the latest snapshot, the first page of events after it, whether that page is all
    load_latest: Callable[[str], Awaitable[Latest]]
    #: the same load with a callback, no task (None: the store has no such call)
    load_latest_then: Callable[[str, Callable[[Latest | BaseException], None]], None] | None
    #: yield (version, type, data) of a stream's events from a version on
    read_stream_data: Callable[[str, int], AsyncIterator[tuple[int, str, JSONDict]]]
    #: hand events to the store, which calls back with the result or the error at commit
    append_then: Appender
    #: the events of a stream that commands with the given ids produced, in version order
    find_command_events: Callable[[str, Collection[str]], Coroutine[Any, Any, list[StoredEvent]]]
    #: how many recent idempotent commands (with an explicit id) each actor remembers
    idempotency_window: int
    #: wait until the actor may hold state in memory (max_active); counts it as active
    admit: Callable[[Actor], Coroutine[Any, Any, None]]
    #: admit the actor if it need not wait; return whether it was
    try_admit: Callable[[Actor], bool]
    #: called when the actor has drained its mailbox
    on_idle: Callable[[Actor], None]
    #: run a step of an actor that waits (loading, backoff) as a task
    start_task: Callable[[Coroutine[Any, Any, None]], None]
    #: run a background coroutine that the runtime finishes before it closes
    spawn: Callable[[Coroutine[Any, Any, None]], None]
    #: a burst of the store's writes: appends made inside go to the writer together when it
    #: ends (a no-op context for stores without bursts)
    burst: Callable[[], AbstractContextManager[None]]
    #: where counters and histograms go (None: no metrics work at all)
    metrics: Metrics | None = None
    #: batch outcomes replied to, kept for the next batches (see BatchOutcome)
    spare_outcomes: list[BatchOutcome] = attrs.Factory(list)
    #: the time timers run by (``after=`` counts from it)
    clock: Clock = attrs.Factory(SystemClock)
    #: hand events and timer writes to the store together; calls back as ``append_then`` does
    append_timed: TimedAppender | None = None
    #: told when timers were stored (the runtime's scheduler may have to wake sooner)
    timers_stored: Callable[[list[TimerChange]], None] | None = None
    #: store new subjects' keys, then seal a batch's personal fields (crypto-shredding)
    seal: Callable[[str, Sequence[NewEvent]], Awaitable[None]] | None = None


class Actor(Activation):
    """The live instance of one aggregate (one stream)."""

    __slots__ = (
        "context",
        "decider",
        "idle_since",
        "in_flight",
        "mailbox",
        "overflow",
        "recent",
        "running",
        "snapshot_at",
        "stream_id",
    )

    #: what every actor of the runtime shares
    context: ActorContext

    def __init__(self, context: ActorContext, decider: Decider[Any, Any, Any], stream_id: str):
        self.context = context
        self.decider = decider
        self.stream_id = stream_id
        self.mailbox: deque[Message] = deque()
        #: senders waiting for mailbox room: (message, future resolved once it is enqueued)
        self.overflow: deque[tuple[Message, asyncio.Future[None]]] | None = None
        self.state: Any = None
        self.version = 0
        self.loaded = False
        self.admitted = False
        self.running = False
        self.idle_since = 0.0
        #: the decided batch whose append the store has not answered yet (at most one)
        self.in_flight: BatchOutcome | None = None
        #: explicit command id -> the events it recorded, oldest first (None until one comes)
        self.recent: IdempotencyWindow | None = None
        #: when a SnapshotInterval policy last saw a snapshot taken (None: not yet)
        self.snapshot_at: float | None = None

    def __repr__(self) -> str:
        return f"<Actor {self.stream_id!r} v{self.version}>"

    # -- draining ------------------------------------------------------------------------------

    def drain(self) -> None:
        """Process messages until the mailbox is empty or the actor waits on the store."""
        try:
            context = self.context
            mailbox = self.mailbox
            while mailbox:
                if not (self.admitted and self.loaded):
                    if not self._load_at_once():
                        context.start_task(self._activate_then_drain())
                    return
                first = mailbox.popleft()
                if type(first) is not Command:
                    if self.overflow:
                        self._accept_overflow()
                    if isinstance(first, GetState):
                        if not first.reply.done():
                            self._answer_state(first)
                    elif isinstance(first, TakeSnapshot) and not first.reply.done():
                        take_snapshot(self, first.reply)
                    continue
                batch: list[Command] = [first]
                explicit = first.command_id is not None  # an id to look up, maybe
                limit = context.max_batch
                while mailbox and len(batch) < limit and type(mailbox[0]) is Command:
                    message: Command = mailbox.popleft()  # type: ignore[assignment]  # see above
                    batch.append(message)
                    if message.command_id is not None:
                        explicit = True
                if self.overflow:
                    self._accept_overflow()
                if explicit and self._unknown_ids(batch):
                    context.start_task(self._look_up_then_submit(batch, 0))
                    return  # the lookup goes on with the batch
                try:
                    submitted = self._submit(batch, 0)
                except BaseException as exc:
                    fail_unanswered(self.stream_id, batch, exc)  # then the actor crashes
                    raise
                if submitted:
                    return  # the store calls us back
            self.running = False
            context.on_idle(self)
        except BaseException as exc:
            self._crash(exc)
            raise

    def _answer_state(self, request: GetState) -> None:
        """Answer a state request with a deep copy of the state (and the version it is at, or
        the version alone, as asked), or with why none was made.

        A state that cannot be copied (nested too deep, an object that refuses copying) is not
        a corrupt one: the caller gets the error and the actor goes on.
        """
        future = request.reply
        if request.wanted == "version":
            future.set_result(self.version)
            return
        try:
            state = copy.deepcopy(self.state)
        except Exception as exc:
            msg = f"could not copy the state of {self.stream_id!r}: {type(exc).__name__}: {exc}"
            logger.warning(
                "state request failed", extra={"stream_id": self.stream_id, "error": msg}
            )
            error = ActorsourceError(msg)
            error.__cause__ = exc
            future.set_exception(error)
        except BaseException as exc:
            future.set_exception(crash_error(self.stream_id, exc))  # then the actor crashes
            raise
        else:
            future.set_result(state if request.wanted == "state" else (state, self.version))

    def _crash(self, exc: BaseException) -> None:
        """A bug (or cancellation) stopped the actor: fail what waits, drop the state."""
        logger.error("actor crashed", exc_info=exc, extra={"stream_id": self.stream_id})
        self._fail_all(exc)
        self.unload()
        self.running = False
        self.context.on_idle(self)

    def _accept_overflow(self) -> None:
        overflow = self.overflow
        if not overflow:
            return
        room = max(self.context.mailbox_size - len(self.mailbox), 0)
        while overflow and room:
            message, entered = overflow.popleft()
            if entered.done():  # the sender gave up waiting
                continue
            self.mailbox.append(message)
            entered.set_result(None)
            room -= 1

    def fail_queued(self, error: Exception) -> None:
        """Fail every message not yet taken (the runtime gives up on them)."""
        self._fail_all(error)

    def _fail_all(self, exc: BaseException) -> None:
        error = crash_error(self.stream_id, exc)
        while self.mailbox:
            future = self.mailbox.popleft().reply
            if future is not None and not future.done():
                future.set_exception(error)
        if self.overflow:
            while self.overflow:
                _, entered = self.overflow.popleft()
                if not entered.done():
                    entered.set_exception(error)

    def unload(self) -> None:
        """Drop the in-memory state; the next message reloads it from the store."""
        self.loaded = False
        self.state = None

    # -- commands -------------------------------------------------------------------------------

    def _submit(self, batch: list[Command], retries: int, known: Known | None = None) -> bool:
        """Decide a batch and hand its events to the store; True if the store will call back.

        :param known: what a store lookup found for the batch's explicit command ids
        """
        outcome = decide_batch(self, batch, known)
        if outcome.rest:
            # messages after a failed applier wait for the reload, in their order
            self.mailbox.extendleft(reversed(outcome.rest))
            del batch[len(batch) - len(outcome.rest) :]
        if outcome.stale and not retries:
            # this actor may be behind the store: reload, then decide the batch again (once)
            recycle(self, outcome)
            self.unload()
            self.context.start_task(self._retry(batch, 1))
            return True
        if not outcome.new_events and outcome.timers is None:
            reply(self, batch, outcome, None)
            if self.context.metrics is not None:
                report(self, outcome, None)
            if outcome.corrupted:
                self.unload()
            recycle(self, outcome)
            return False
        start_version = self.version
        # at most one append is in flight per actor: keep its context here, not in a closure
        # (nor in a tuple: the outcome, made for the batch anyway, holds it)
        outcome.batch, outcome.start_version, outcome.retries = batch, start_version, retries
        self.in_flight = outcome
        try:
            if outcome.unsealed:
                self.context.start_task(self._seal_then_append(outcome, start_version))
            elif outcome.timers is None:
                self.context.append_then(self.stream_id, start_version, outcome.new_events, self)
            else:
                self._append_timed(outcome, start_version)
        except Exception as exc:
            self.in_flight = None
            self._append_failed(batch, exc, at_once=True)
            return False
        return True

    async def _seal_then_append(self, outcome: BatchOutcome, start_version: int) -> None:
        """Store the keys of the batch's new subjects, seal its personal fields, then append
        (the store calls back as on the usual path)."""
        seal = self.context.seal
        try:
            if seal is None:
                msg = "this runtime cannot seal personal fields"
                raise StoreError(msg)
            await seal(self.stream_id, outcome.new_events)
            if outcome.timers is None:
                self.context.append_then(self.stream_id, start_version, outcome.new_events, self)
            else:
                self._append_timed(outcome, start_version)
        except Exception as exc:
            self.in_flight = None
            self._append_failed(outcome.batch, exc, at_once=True)

    def _append_timed(self, outcome: BatchOutcome, start_version: int) -> None:
        """Hand the batch's events and timer writes to the store, to commit together."""
        append_timed = self.context.append_timed
        assert append_timed is not None and outcome.timers is not None
        append_timed(self.stream_id, start_version, outcome.new_events, outcome.timers, self)

    def _appended(self, appended: AppendResult | BaseException) -> None:
        """The store's call back at commit (the result, or this append's error): reply, then
        drain on."""
        outcome = self.in_flight
        assert outcome is not None
        batch, start_version, retries = outcome.batch, outcome.start_version, outcome.retries
        self.in_flight = None
        try:
            if isinstance(appended, ConcurrencyError):
                # another writer appended first: reload and decide again, a bounded number of times
                self.unload()
                if retries < self.context.max_conflict_retries:
                    self.context.counters.conflicts_retried += 1
                    if self.context.metrics is not None:
                        labels = {"category": self.decider.name}
                        self.context.metrics.add(CONFLICTS_RETRIED, 1, labels)
                    self.context.start_task(self._retry(batch, retries + 1))
                    return
                final = ConcurrencyError(
                    appended.stream_id,
                    appended.expected_version,
                    appended.actual_version,
                    retries=retries,
                )
                reply_error(self, batch, final)
            elif isinstance(appended, BaseException):
                self._append_failed(batch, appended)
            else:
                supervisor = self.context.supervisor
                if supervisor.failing:  # almost always empty: no call then
                    supervisor.succeeded(self.stream_id)
                self.version = appended.version
                self.context.counters.events_appended += len(outcome.new_events)
                if logger.isEnabledFor(logging.DEBUG):
                    log_appended(self, outcome.new_events, appended)
                reply(self, batch, outcome, appended)
                if outcome.timers is not None and self.context.timers_stored is not None:
                    self.context.timers_stored(outcome.timers)
                if self.context.metrics is not None:
                    report(self, outcome, appended.version)
                if outcome.corrupted:
                    self.unload()
                elif self.decider.snapshot_every or self.context.snapshot is not None:
                    snapshot_if_due(self, start_version)
            spare = self.context.spare_outcomes  # _recycle, inlined: once per append
            if len(spare) < SPARE_OUTCOMES:
                outcome.clear()
                spare.append(outcome)
        except BaseException as exc:
            fail_unanswered(self.stream_id, batch, exc)
            self._crash(exc)
            raise
        if self.mailbox:
            self.drain()
            return
        # drain's end, inlined: an actor with nothing more to do (once per append)
        try:
            self.running = False
            self.context.on_idle(self)
        except BaseException as exc:
            self._crash(exc)
            raise

    #: the actor is its own commit callback (``append_then(..., self)``): a bound method made
    #: per append would be one more object per command in flight for the garbage collector,
    #: whose young collections walk every object in flight (a measurable share of a command
    #: under many callers); one made per actor would tie the actor in a reference cycle
    __call__ = _appended

    async def _retry(self, batch: list[Command], retries: int) -> None:
        try:
            if retries > 2:
                await asyncio.sleep(random.uniform(0, min(0.001 * 2**retries, 0.05)))
            failure = await self._activate()
            if failure is not None:
                deleted = isinstance(failure, StreamDeletedError)
                reply_error(
                    self,
                    batch,
                    failure if deleted else ActorFailedError(self.stream_id, "reload failed"),
                )
            else:
                # the writer that won may have processed some of these commands itself
                known = await self._look_up(batch) if self._unknown_ids(batch) else None
                if self._submit(batch, retries, known):
                    return  # the store calls us back
        except BaseException as exc:
            reply_error(self, batch, ActorFailedError(self.stream_id, "stopped"))
            self._crash(exc)
            raise
        self.drain()

    # -- idempotent commands ----------------------------------------------------------------------

    def _unknown_ids(self, batch: list[Command]) -> bool:
        return unknown_ids(batch, self.recent)

    async def _look_up_then_submit(self, batch: list[Command], retries: int) -> None:
        try:
            known = await self._look_up(batch)
            if self._submit(batch, retries, known):
                return  # the store calls us back
        except BaseException as exc:
            reply_error(self, batch, ActorFailedError(self.stream_id, "stopped"))
            self._crash(exc)
            raise
        self.drain()

    async def _look_up(self, batch: list[Command]) -> Known:
        context = self.context
        return await look_up(
            context.find_command_events,
            context.codec,
            self.stream_id,
            batch,
            recent=self.recent,
            remember=self.remember,
        )

    def remember(self, command_id: str, recorded: list[RecordedEvent[Any]]) -> None:
        """Keep a command's recorded events in the window (dropping the oldest if it is full)."""
        size = self.context.idempotency_window
        if not size:
            return
        recent = self.recent
        if recent is None:
            recent = self.recent = IdempotencyWindow(size)
        recent.remember(command_id, recorded)

    def earlier(self, command_id: str, known: Known | None, outcome: BatchOutcome) -> Any:
        """What an explicit command id already recorded: a :class:`Repeat`, an error to reply
        with, or None if it has to be decided."""
        if outcome.keyed is not None and command_id in outcome.keyed:
            return Repeat(None)  # decided earlier in this batch: its reply is built first
        recent = self.recent
        if recent is not None:
            recorded = recent.get(command_id)
            if recorded is not None:
                return Repeat(recorded)
        if known is not None:
            found = known.get(command_id)
            if found is not None:
                return found if isinstance(found, Exception) else Repeat(found)
        return None

    # -- deciding and replying ---------------------------------------------------------------------

    def _append_failed(
        self, batch: list[Command], exc: BaseException, *, at_once: bool = False
    ) -> None:
        """The append failed: nothing was stored; reply with the error, reload on the next
        message.

        :param at_once: the store raised as it was called (a ValueError then is how a store
            refuses bad arguments, before any I/O)
        """
        # the actor applied the events: it must not trust its state
        self.unload()
        self.context.counters.actor_failures += 1
        bad_input = isinstance(exc, CodecError) or (at_once and isinstance(exc, ValueError))
        # no reason to spare the store (a fenced-off append: the shard lives elsewhere now)
        if not bad_input and not isinstance(exc, (ProjectionError, FencedError)):
            # the next load waits out a backoff, so that a failing store is not hammered
            self.context.supervisor.failed(self.stream_id, f"appending failed: {exc}")
        logger.warning("append failed", extra={"stream_id": self.stream_id, "error": str(exc)})
        failure: Exception
        if isinstance(exc, (StoreError, CodecError, ProjectionError)):
            failure = exc
        else:
            failure = StoreError(f"appending to {self.stream_id!r} failed: {exc}")
            failure.__cause__ = exc
        reply_error(self, batch, failure)
