"""How an actor loads: admission, activation slots, the callback load, backoff after failures.

The usual activation has no task: the store's callback load (``load_latest_then``) answers in
the loop step that receives it, and the actor drains on. Only the steps that truly wait
(admission under ``max_active``, a full set of activation slots, an activation timeout, a long
tail, stores without a callback load) run as a short task. The state itself is rebuilt by
:class:`~actorsource._rehydration.Rehydration`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractContextManager
from typing import Any, Protocol

import anyio

from ._codec import Codec
from ._context import Counters, Slots
from ._decider import Decider
from ._errors import ActorFailedError, StreamDeletedError
from ._metrics import ACTIVATIONS, REPLAY_DURATION, REPLAY_EVENTS, Metrics
from ._records import JSONDict
from ._rehydration import Rehydration
from ._supervision import Supervisor
from .stores._base import Latest

logger = logging.getLogger("actorsource.actor")


class ActivationContext(Protocol):
    """What loading uses of the actors' shared context."""

    codec: Codec
    counters: Counters
    metrics: Metrics | None
    activation_slots: Slots
    activation_timeout: float | None
    supervisor: Supervisor
    load_latest: Callable[[str], Awaitable[Latest]]
    load_latest_then: Callable[[str, Callable[[Latest | BaseException], None]], None] | None
    read_stream_data: Callable[[str, int], AsyncIterator[tuple[int, str, JSONDict]]]
    admit: Callable[[Any], Coroutine[Any, Any, None]]
    try_admit: Callable[[Any], bool]
    start_task: Callable[[Coroutine[Any, Any, None]], None]
    burst: Callable[[], AbstractContextManager[None]]


class Activation:
    """The loading half of :class:`~actorsource._actor.Actor` (its base: one object, one
    class of state; split for reading)."""

    # what loading sets: slots here, so that Actor stays a slotted class
    __slots__ = ("admitted", "loaded", "state", "version")

    # what loading reads (slots of Actor)
    context: ActivationContext
    decider: Decider[Any, Any, Any]
    stream_id: str
    state: Any
    version: int
    loaded: bool
    admitted: bool

    def drain(self) -> None:
        raise NotImplementedError  # Actor's

    def _crash(self, exc: BaseException) -> None:
        raise NotImplementedError  # Actor's

    def _fail_all(self, exc: BaseException) -> None:
        raise NotImplementedError  # Actor's

    async def _activate_then_drain(self) -> None:
        try:
            if not self.admitted:
                await self.context.admit(self)
            if not self.loaded:
                await self._activate()
        except BaseException as exc:
            self._crash(exc)
            raise
        with self.context.burst():  # its append is all there is: an idle writer starts now
            self.drain()

    # -- loading ------------------------------------------------------------------------------

    def _load_at_once(self) -> bool:
        """Start loading with a callback when nothing has to wait; return False if something
        does (then the task path, :meth:`_activate_then_drain`, loads).

        The usual activation: no task, no coroutines, and the load's reply reaches the actor in
        the loop step that receives it (one step and a task switch fewer than a task's).
        """
        context = self.context
        load_then = context.load_latest_then
        if load_then is None or context.activation_timeout is not None:
            return False
        if context.supervisor.backoff_left(self.stream_id) > 0:
            return False  # the task path fails the messages, saying why
        if not self.admitted and not context.try_admit(self):
            return False
        if not context.activation_slots.try_take():
            return False
        self.loaded = False
        started = time.perf_counter()
        try:
            load_then(self.stream_id, functools.partial(self._loaded, started))
        except Exception:  # the store cannot read: the task path meets the error and reports it
            context.activation_slots.give_back()
            return False
        return True

    def _loaded(self, started: float, outcome: Latest | BaseException) -> None:
        """The store's call back with what :meth:`_load_at_once` asked for."""
        context = self.context
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            state, version, start, complete = self._rehydration().start(*outcome)
            if not complete:  # a long stream with no usable snapshot: read the rest in a task
                context.start_task(self._load_rest_then_drain(state, version, start, started))
                return
            replayed = self._end_load(state, version, start)
        except Exception as exc:
            context.activation_slots.give_back()
            self._load_failed(exc)
        else:
            context.activation_slots.give_back()
            self._load_succeeded(started, replayed)
        with context.burst():  # its append is all there is: an idle writer starts now
            self.drain()

    async def _load_rest_then_drain(
        self, state: Any, version: int, start: int, started: float
    ) -> None:
        try:
            try:
                read = self.context.read_stream_data(self.stream_id, version + 1)
                state, version = await self._rehydration().replay_rest(read, state, version)
                replayed = self._end_load(state, version, start)
            finally:
                self.context.activation_slots.give_back()
        except Exception as exc:
            self._load_failed(exc)
        except BaseException as exc:
            self._crash(exc)
            raise
        else:
            self._load_succeeded(started, replayed)
        with self.context.burst():
            self.drain()

    async def _activate(self) -> Exception | None:
        """Load the snapshot and the events after it; on failure fail the queued messages and
        return the error they got.

        Loads are limited in number (``max_activations``) and in time (``activation_timeout``),
        and an aggregate whose loads keep failing is not tried again until its backoff passed:
        meanwhile its messages fail at once, without touching the store.
        """
        context = self.context
        supervisor = context.supervisor
        refusal = supervisor.refusal(self.stream_id)
        if refusal is not None:
            self._fail_all(refusal)
            return refusal
        started = time.perf_counter()
        try:
            await context.activation_slots.take()
            try:
                if context.activation_timeout is None:
                    # no cancel scope to enter and leave: a measurable share of an activation
                    replayed = await self._load()
                else:
                    with anyio.fail_after(context.activation_timeout):
                        replayed = await self._load()
            finally:
                context.activation_slots.give_back()
        except Exception as exc:
            return self._load_failed(exc)
        self._load_succeeded(started, replayed)
        return None

    def _load_failed(self, exc: Exception) -> Exception:
        """A load failed: count it, back off, and fail the queued messages with the reason;
        return the error they got.

        A deleted stream is no failure: its messages get the :class:`StreamDeletedError`.
        """
        if isinstance(exc, StreamDeletedError):
            self._fail_all(exc)
            return exc
        context = self.context
        context.counters.actor_failures += 1
        if isinstance(exc, TimeoutError):
            reason = f"loading took longer than {context.activation_timeout} s"
        else:
            reason = f"loading the aggregate failed: {exc}"
        context.supervisor.failed(self.stream_id, reason)
        logger.warning("actor failed to load", extra={"stream_id": self.stream_id, "error": reason})
        error = ActorFailedError(self.stream_id, reason)
        error.__cause__ = exc
        self._fail_all(error)
        return error

    def _load_succeeded(self, started: float, replayed: int) -> None:
        context = self.context
        context.counters.activations += 1
        metrics = context.metrics
        if metrics is not None:
            labels = {"category": self.decider.name}
            metrics.add(ACTIVATIONS, 1, labels)
            metrics.record(REPLAY_DURATION, time.perf_counter() - started, labels)
            metrics.record(REPLAY_EVENTS, replayed, labels)

    async def _load(self) -> int:
        """Load the state; return how many events were replayed."""
        self.loaded = False
        context, stream_id = self.context, self.stream_id
        state, version, start = await self._rehydration().rehydrate(
            await context.load_latest(stream_id),
            lambda after: context.read_stream_data(stream_id, after),
        )
        return self._end_load(state, version, start)

    def _rehydration(self) -> Rehydration:
        return Rehydration(self.decider, self.context.codec, self.stream_id)

    def _end_load(self, state: Any, version: int, start: int) -> int:
        """Take the loaded state; return how many events were replayed."""
        replayed = version - start
        self.context.counters.events_replayed += replayed
        if replayed and logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "events replayed",
                extra={
                    "stream_id": self.stream_id,
                    "event_count": replayed,
                    "from_version": start + 1,
                    "to_version": version,
                },
            )
        self.state = state
        self.version = version
        self.loaded = True
        return replayed
