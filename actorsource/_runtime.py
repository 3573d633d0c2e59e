"""The runtime: live actors by stream id, activation on demand, passivation, refs, statistics."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Any, Self, TypeVar, overload

import anyio

from ._actor import ActorContext
from ._aggregate import Aggregate
from ._archiving import Retention
from ._codec import Codec
from ._context import Counters, Slots
from ._decider import Decider
from ._dispatcher import Dispatcher, RuntimeState
from ._errors import (
    RuntimeClosedError,
)
from ._hosting import ProjectionHost
from ._metrics import Metrics
from ._policies import (
    Backoff,
    Passivation,
    SnapshotEvery,
    SnapshotInterval,
    check_optional_positive,
    check_runtime_options,
    check_seconds,
    passivation_policy,
    snapshot_policy,
)
from ._projection import Projection
from ._reading import Deciders
from ._refs import AggregateRef, Mailboxes
from ._routes import appender, data_reader, latest_loader, no_burst, timed_appender
from ._runtime_observing import RuntimeObserving
from ._runtime_projections import RuntimeProjections
from ._runtime_reading import RuntimeReading
from ._scheduler import TimerScheduler, timer_scheduler
from ._shredding import Shredder
from ._supervision import Supervisor
from ._timers import SystemClock, Timers
from .cluster import Cluster, ClusterNode, ClusterView
from .stores._base import EventStore

logger = logging.getLogger("actorsource.runtime")

A = TypeVar("A", bound=Aggregate)
P = TypeVar("P", bound=Projection)
_T = TypeVar("_T")
S = TypeVar("S")


class Runtime(RuntimeReading, RuntimeProjections, RuntimeObserving):
    """Runs aggregates as virtual actors on an event store.

    Use it as an async context manager; leaving the context processes every message already
    accepted, stops all actors, and closes the store if the runtime opened it.

    :param store: the event store (opened by the runtime unless it is already open)
    :param snapshot_every: save a snapshot whenever a stream's version reaches a multiple of
        this (``None``: never, unless an aggregate class sets its own)
    :param passivate_after: seconds an actor may stay idle before it leaves memory
        (``None``: never)
    :param max_active: the most actors holding state in memory at once; the least recently used
        idle actor is passivated to make room (``None``: no limit)
    :param mailbox_size: messages an actor's mailbox holds; ``ask``/``tell`` wait for room,
        ``tell_nowait`` raises :class:`MailboxFullError`
    :param max_batch: the most queued commands of one actor decided together and stored in
        one append
    :param max_conflict_retries: how often a command is decided again after a version
        conflict before :class:`ConcurrencyError` reaches the caller
    :param ask_timeout: default seconds ``ask`` waits for an outcome (``None``: no limit)
    :param max_activations: the most aggregates loading from the store at once; the rest
        wait their turn (their messages stay queued)
    :param activation_timeout: seconds a load may take before its messages fail with
        :class:`ActorFailedError` (``None``: no limit)
    :param poll_interval: seconds between projections' reads for events that other processes
        appended (this process's appends wake them at once)
    :param metrics: where to report counters and histograms (see :class:`Metrics`; ``None``:
        no metrics work at all)
    :param shutdown_timeout: seconds leaving the context may spend processing what was
        accepted; then queued messages fail with :class:`RuntimeClosedError` and a warning
        names the aggregates (``None``: no limit)
    :param idempotency_window: how many recent commands sent with an explicit ``command_id``
        each live actor remembers, to answer a repeat without a store read (``0``: none; the
        store is then read for every such command). Commands without one cost nothing
    :param snapshot: the snapshot policy as a value (:class:`SnapshotEvery` or
        :class:`SnapshotInterval`, each with how many snapshots to keep per stream; instead of
        ``snapshot_every``)
    :param passivation: the passivation policy as a value (:class:`Passivation`; instead of
        ``passivate_after`` and ``max_active``)
    :param supervision: how long failing aggregates are left alone (:class:`Backoff`; default:
        ``Backoff()``, 50 ms doubling up to 5 s)
    :param timers: deliver the durable timers that come due (:class:`Timers`: which
        aggregates, the clock, the lease); without it, handlers still schedule timers (they are
        stored) but this runtime delivers none
    :param cluster: join a cluster of runtimes (:class:`Cluster`; a store with cluster tables:
        PostgreSQL, or the memory store in one process): each aggregate then lives on one
        member at a time, and its appends are fenced by that member's shard lease
    :raises ValueError: if ``cluster`` is given and the store keeps no cluster tables (SQLite)
    """

    def __init__(
        self,
        store: EventStore,
        *,
        snapshot_every: int | None = None,
        passivate_after: float | None = None,
        max_active: int | None = None,
        mailbox_size: int = 1000,
        max_batch: int = 100,
        max_conflict_retries: int = 30,
        ask_timeout: float | None = None,
        shutdown_timeout: float | None = None,
        max_activations: int = 64,
        activation_timeout: float | None = None,
        poll_interval: float = 0.5,
        metrics: Metrics | None = None,
        idempotency_window: int = 32,
        snapshot: SnapshotEvery | SnapshotInterval | None = None,
        passivation: Passivation | None = None,
        supervision: Backoff | None = None,
        timers: Timers | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        check_optional_positive("snapshot_every", snapshot_every)
        check_optional_positive("max_active", max_active)
        snapshot = snapshot_policy(snapshot, snapshot_every)
        passivation = passivation_policy(passivation, passivate_after, max_active)
        passivate_after, max_active = passivation.idle_after, passivation.max_active
        check_runtime_options(
            supervision=supervision,
            mailbox_size=mailbox_size,
            max_batch=max_batch,
            max_activations=max_activations,
            activation_timeout=activation_timeout,
            max_conflict_retries=max_conflict_retries,
            idempotency_window=idempotency_window,
            ask_timeout=ask_timeout,
            shutdown_timeout=shutdown_timeout,
        )
        #: seconds between projections' reads for events that other processes append
        self.poll_interval = check_seconds("poll_interval", poll_interval)
        self.store = store
        #: the most actors holding state in memory at once (None: no limit)
        self.max_active = max_active
        #: where counters and histograms go (None: nowhere)
        self.metrics = metrics
        #: the live actors: mailboxes, admission, passivation
        self._dispatcher = dispatcher = Dispatcher(
            passivation,
            ask_timeout=ask_timeout,
            shutdown_timeout=shutdown_timeout,
            metrics=metrics,
        )
        self._codec = Codec()
        self._counters = Counters()
        #: what the store offers beyond the core contract, asked once
        self._capabilities = capabilities = store.capabilities()
        dispatcher.context = self._context = ActorContext(
            store=store,
            codec=self._codec,
            counters=self._counters,
            snapshot=snapshot,
            mailbox_size=mailbox_size,
            max_batch=max_batch,
            max_conflict_retries=max_conflict_retries,
            activation_slots=Slots(max_activations),
            activation_timeout=activation_timeout,
            supervisor=Supervisor(supervision),
            load_latest=latest_loader(store, capabilities),
            load_latest_then=capabilities.load_latest_then,
            read_stream_data=data_reader(store, capabilities),
            append_then=appender(store, capabilities),
            find_command_events=store.find_command_events,
            idempotency_window=idempotency_window,
            admit=dispatcher.admit,
            try_admit=dispatcher.try_admit,
            on_idle=dispatcher.on_idle,
            start_task=dispatcher.start_task,
            spawn=dispatcher.spawn,
            burst=capabilities.burst or no_burst,
            metrics=metrics,
            clock=timers.clock if timers is not None else SystemClock(),
            append_timed=timed_appender(store, capabilities),
        )
        self._opened_store = False
        self._task_group: anyio.abc.TaskGroup | None = None
        #: the aggregates used here, by class or Decider, their events registered
        self._deciders = Deciders(self._codec, snapshots=snapshot is not None)
        #: delivers due timers (None: this runtime delivers none)
        self._scheduler: TimerScheduler | None = None
        self._timer_scope: anyio.CancelScope | None = None
        #: what refs send through: the dispatcher, or in a cluster the routing to the owner
        self._mailboxes: Mailboxes = dispatcher
        #: this runtime as a member of a cluster (None: not clustered; nothing changes then)
        self._node: ClusterNode | None = None
        if cluster is not None:
            self._node = ClusterNode(
                cluster,
                store,
                capabilities,
                dispatcher,
                codec=self._codec,
                deciders=self._deciders.in_category,
            )
            self._context.append_then = self._node.appender()
            self._context.append_timed = self._node.timed_appender()
            self._mailboxes = self._node.routed
            for aggregate in cluster.aggregates:  # served before any ref is made to them
                self._decider_for(aggregate)
        if timers is not None:
            self._scheduler = self._timer_scheduler(timers)
            self._context.timers_stored = self._scheduler.stored
        #: the projections this runtime runs
        self._hosting = ProjectionHost(
            store, self._codec, self, metrics=metrics, poll_interval=poll_interval
        )
        if self._node is not None:
            # each durable background projection runs on one member at a time, leased
            self._hosting.gate()
            self._node.lease_projections(self._hosting)
        #: what each live ``subscribe`` has yielded up to (archiving stays behind them)
        self._subscribers: dict[object, int] = {}
        #: subject keys for personal fields, in step with the store's
        self._shredder = Shredder(self._codec, capabilities.subject_keys, repr(store))
        self._context.seal = self._shredder.seal
        self._retention = Retention(
            store, capabilities, self._reader_positions, self._dispatcher.passivate_stream
        )

    @property
    def cluster(self) -> ClusterView | None:
        """This member's view of its cluster (``None``: the runtime was made without
        ``cluster=``)."""
        return ClusterView(self._node) if self._node is not None else None

    def _timer_scheduler(self, timers: Timers) -> TimerScheduler:
        if not isinstance(timers, Timers):
            msg = f"timers must be a Timers value, got {timers!r}"
            raise TypeError(msg)
        return timer_scheduler(
            self.store,
            self._capabilities,
            timers,
            deciders=self._deciders,
            codec=self._codec,
            mailboxes=self._mailboxes,
        )

    async def fire_due_timers(self) -> int:
        """Deliver every timer due now (by the runtime's clock) that no other runtime holds,
        and return how many ticks were delivered.

        The runtime does this on its own as timers come due; tests with a fake clock call it
        after ``clock.advance(...)`` to wait until what came due was delivered.

        :raises RuntimeClosedError: if the runtime is not open
        :raises ValueError: if the runtime was made without ``timers=``
        """
        if self._state is not RuntimeState.OPEN:
            msg = f"the runtime is {self._state.value}; timers are delivered by an open one"
            raise RuntimeClosedError(msg)
        if self._scheduler is None:
            msg = "this runtime delivers no timers: make it with Runtime(..., timers=Timers(...))"
            raise ValueError(msg)
        return await self._scheduler.fire_due()

    async def _run_timers(self, scheduler: TimerScheduler) -> None:
        with anyio.CancelScope() as scope:
            self._timer_scope = scope
            await scheduler.run()

    def __repr__(self) -> str:
        active = self._dispatcher.active
        return f"<Runtime {self._state.value} store={self.store!r} active={active}>"

    @property
    def ask_timeout(self) -> float | None:
        """The default limit of ``ask`` (seconds; None: wait as long as it takes)."""
        return self._dispatcher.ask_timeout

    @ask_timeout.setter
    def ask_timeout(self, value: float | None) -> None:
        self._dispatcher.ask_timeout = check_seconds("ask_timeout", value, optional=True)

    @property
    def passivate_after(self) -> float | None:
        """Seconds an actor may stay idle before it leaves memory (None: never)."""
        return self._dispatcher.passivate_after

    @passivate_after.setter
    def passivate_after(self, value: float | None) -> None:
        self._dispatcher.passivate_after = value

    @property
    def shutdown_timeout(self) -> float | None:
        """How long leaving the context may drain before the rest is abandoned."""
        return self._dispatcher.shutdown_timeout

    @shutdown_timeout.setter
    def shutdown_timeout(self, value: float | None) -> None:
        self._dispatcher.shutdown_timeout = check_seconds(
            "shutdown_timeout", value, zero=True, optional=True
        )

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state is not RuntimeState.UNOPENED:
            msg = f"a Runtime can be entered once; this one is {self._state.value}"
            raise RuntimeClosedError(msg)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            msg = "actorsource runs on asyncio (anyio's asyncio backend); no asyncio loop runs"
            raise RuntimeError(msg) from None
        if not self.store.is_open:
            await self.store.open()
            self._opened_store = True
        await self._shredder.open()
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        self._dispatcher.open(task_group)
        self._hosting.open(task_group)
        if self._scheduler is not None:
            task_group.start_soon(self._run_timers, self._scheduler)
        if self._node is not None:
            try:
                await self._node.start(task_group)
            except BaseException as exc:
                await self.__aexit__(type(exc), exc, exc.__traceback__)
                raise
        logger.debug("runtime opened", extra={"store": repr(self.store)})
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state is not RuntimeState.OPEN:
            return
        self._hosting.closing()
        if self._timer_scope is not None:
            self._timer_scope.cancel()  # claims held lapse after their lease
        task_group = self._task_group
        assert task_group is not None
        try:
            if self._node is not None:
                await self._node.stop()  # hands its shards off first
            await self._dispatcher.close(task_group.cancel_scope.cancel)
            # stop the projections; leaving the task group waits for snapshot saves
            await self._hosting.close()
        except BaseException:
            self._dispatcher.cancel_tasks()
            task_group.cancel_scope.cancel()
            raise
        finally:
            try:
                await task_group.__aexit__(None, None, None)
            finally:
                self._dispatcher.state = RuntimeState.CLOSED
                if self._opened_store:
                    await self.store.close()
            logger.debug("runtime closed", extra={"store": repr(self.store)})

    # -- refs and messages -----------------------------------------------------------------

    @overload
    def ref(self, aggregate: type[A], aggregate_id: str) -> AggregateRef[A]: ...

    @overload
    def ref(self, aggregate: Decider[Any, Any, S], aggregate_id: str) -> AggregateRef[S]: ...

    def ref(self, aggregate: Any, aggregate_id: str) -> AggregateRef[Any]:
        """Return a handle to one aggregate instance (cheap: no I/O, nothing activated).

        :param aggregate: an :class:`Aggregate` subclass or a :class:`Decider`
        :param aggregate_id: any non-empty str
        :raises DefinitionError: if the aggregate class is malformed, another aggregate used
            in this runtime has its stream category, or its events (or its state, when
            snapshots are taken) have a field of a type the codec cannot store
        """
        decider = self._decider(aggregate, aggregate_id)
        stream_id = f"{decider.name}-{aggregate_id}"
        return AggregateRef(self._mailboxes, decider, aggregate_id, stream_id)

    # -- passivation -------------------------------------------------------------------------------

    def passivate_idle(self) -> int:
        """Passivate every idle actor now (to shed memory); return how many were passivated.

        Busy actors are not touched: they stay until idle, as ``passivate_after`` decides.
        """
        return self._dispatcher.passivate_idle()
