"""The process router: reads the log from a checkpoint, hands each event to the process manager
instances it concerns, sends the commands they record, and gives them the outcomes.

Each instance has its own lane (a queue worked by its own task), so a slow or failing instance
holds up only itself. The checkpoint is the low-water mark of the work in flight: it never
passes an event whose handling, or a recorded command whose sending and outcome, is not done, so
a crash replays from there and the instances recognise what they did already.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

from ._aggregate import decider_of
from ._codec import Codec, event_type_spec
from ._decider import Decider
from ._errors import Rejected
from ._policies import check_seconds
from ._process_manager import (
    CommandDecided,
    HandleEvent,
    Outcome,
    ProcessManager,
    RecordOutcome,
    event_keys,
)
from ._records import StoredEvent
from ._runtime import Runtime
from .stores._subscription import subscribe

logger = logging.getLogger("actorsource.processes")

Work = Callable[[], Awaitable[None]]


class _Lane:
    """One instance's queue of work, in log order."""

    def __init__(self) -> None:
        self.items: list[tuple[int, Work]] = []
        self.running = False


class ProcessRouter:
    """Feeds process managers from the log and delivers what they decide.

    Use it as an async context manager around the runtime's life (it runs in the background), or
    call :meth:`run_until_idle` (tests, scripts)::

        async with Runtime(store, timers=Timers([Fulfilment])) as runtime:
            async with ProcessRouter(runtime, [Fulfilment], aggregates=[Warehouse, Order]):
                ...

    :param runtime: the runtime whose aggregates receive the commands
    :param managers: the process manager classes to feed
    :param name: the checkpoint's name (one per router; two routers must not share one)
    :param aggregates: the aggregates (classes or Deciders) the process managers send commands
        to; a command to another waits, logged, until a router that knows its target runs
    :param poll_interval: seconds between looks for events other processes stored
    :param retry_limit: the longest wait, in seconds, between attempts at failing work
    """

    def __init__(
        self,
        runtime: Runtime,
        managers: Sequence[type[ProcessManager]],
        *,
        name: str = "process-router",
        aggregates: Sequence[Any] = (),
        poll_interval: float = 0.5,
        retry_limit: float = 5.0,
    ) -> None:
        if not managers:
            msg = "ProcessRouter needs at least one ProcessManager class"
            raise ValueError(msg)
        for manager in managers:
            if not (isinstance(manager, type) and issubclass(manager, ProcessManager)):
                msg = f"ProcessRouter manages ProcessManager subclasses, got {manager!r}"
                raise TypeError(msg)
        self._runtime = runtime
        self._name = name
        self._poll = check_seconds("poll_interval", poll_interval)
        self._retry_limit = check_seconds("retry_limit", retry_limit)
        self._codec = Codec()
        self._managers: dict[str, type[ProcessManager]] = {}
        #: event type name -> [(manager, event class, key)]
        self._routes: dict[str, list[tuple[type[ProcessManager], Any]]] = {}
        for manager in managers:
            self._managers[decider_of(manager).name] = manager
            keys = event_keys(manager)
            self._codec.register_events(keys)
            for kind, key in keys.items():
                spec = event_type_spec(kind)
                for type_name in (spec.name, *spec.aliases):
                    self._routes.setdefault(type_name, []).append((manager, key))
        self._targets: dict[str, Any] = {}
        for aggregate in aggregates:
            decider = aggregate if isinstance(aggregate, Decider) else decider_of(aggregate)
            self._targets[decider.name] = aggregate
        self._lanes: dict[str, _Lane] = {}
        self._in_flight: dict[int, int] = {}
        self._read = 0
        self._saved = 0
        self._group: anyio.abc.TaskGroup | None = None
        self._idle = anyio.Event()
        self._stack: anyio.abc.TaskGroup | None = None

    # -- running

    async def __aenter__(self) -> ProcessRouter:
        self._stack = anyio.create_task_group()
        await self._stack.__aenter__()
        self._stack.start_soon(self.run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._stack is not None
        self._stack.cancel_scope.cancel()
        return await self._stack.__aexit__(exc_type, exc, tb)

    async def run(self) -> None:
        """Route the log from the checkpoint on, forever (until cancelled)."""
        store = self._runtime.store
        self._read = self._saved = await store.load_checkpoint(self._name)
        async with anyio.create_task_group() as group:
            self._group = group
            group.start_soon(self._save_now_and_then)
            async for stored in subscribe(store, self._read + 1, poll_interval=self._poll):
                self._route(stored)
                self._read = stored.position

    async def run_until_idle(self) -> None:
        """Route everything stored, and what that causes, until nothing is left to do; save the
        checkpoint."""
        store = self._runtime.store
        self._read = self._saved = await store.load_checkpoint(self._name)
        async with anyio.create_task_group() as group:
            self._group = group
            while True:
                head = await store.head_position()
                async for stored in store.read_all(self._read + 1, to_position=head):
                    self._route(stored)
                    self._read = stored.position
                while self._in_flight:
                    self._idle = anyio.Event()
                    await self._idle.wait()
                if await store.head_position() == head:
                    break
        await self._save()

    async def _save_now_and_then(self) -> None:
        while True:
            await anyio.sleep(self._poll)
            await self._save()

    async def _save(self) -> None:
        mark = min(self._in_flight) - 1 if self._in_flight else self._read
        if mark > self._saved:
            await self._runtime.store.save_checkpoint(self._name, mark)
            self._saved = mark

    # -- routing

    def _route(self, stored: StoredEvent) -> None:
        category = stored.stream_id.split("-", 1)[0]
        manager = self._managers.get(category)
        if manager is not None and stored.type == "CommandDecided":
            instance = stored.stream_id.split("-", 1)[1]
            decided = CommandDecided(**stored.data)
            self._queue(
                manager,
                instance,
                stored.position,
                functools.partial(self._send, manager, instance, stored, decided),
            )
        for handler_of, key in self._routes.get(stored.type, ()):
            if handler_of is manager:
                continue  # an instance's own events are not its input
            event = self._codec.decode_event(stored.type, stored.data, where=stored.stream_id)
            instance_id = key(event)
            if instance_id is None:
                continue
            self._queue(
                handler_of,
                instance_id,
                stored.position,
                functools.partial(self._handle, handler_of, instance_id, stored, event),
            )

    def _queue(
        self, manager: type[ProcessManager], instance: str, position: int, work: Work
    ) -> None:
        lane_id = f"{decider_of(manager).name}-{instance}"  # the instance's stream id
        lane = self._lanes.get(lane_id)
        if lane is None:
            lane = self._lanes[lane_id] = _Lane()
        lane.items.append((position, work))
        self._in_flight[position] = self._in_flight.get(position, 0) + 1
        if not lane.running:
            lane.running = True
            assert self._group is not None
            self._group.start_soon(self._work, lane_id, lane)

    async def _work(self, lane_id: str, lane: _Lane) -> None:
        while lane.items:
            position, work = lane.items[0]
            await self._until_done(work, lane_id)
            lane.items.pop(0)
            left = self._in_flight[position] - 1
            if left:
                self._in_flight[position] = left
            else:
                del self._in_flight[position]
        lane.running = False
        del self._lanes[lane_id]
        if not self._in_flight:
            self._idle.set()

    async def _until_done(self, work: Work, lane_id: str) -> None:
        failures = 0
        while True:
            try:
                await work()
                return
            except Exception as exc:
                failures += 1
                wait = min(0.05 * 2 ** min(failures - 1, 20), self._retry_limit)
                logger.warning(
                    "process %s: attempt %d failed (%s: %s); again in %.2f s",
                    lane_id,
                    failures,
                    type(exc).__name__,
                    exc,
                    wait,
                )
                await anyio.sleep(wait)

    async def _handle(
        self, manager: type[ProcessManager], instance: str, stored: StoredEvent, event: object
    ) -> None:
        ref = self._runtime.ref(manager, instance)
        try:
            await ref.ask(
                HandleEvent(event, stored.position, stored.type),
                command_id=f"event:{stored.event_id}",
                causation_id=stored.event_id,
            )
        except Rejected as exc:
            logger.info("process %s refused event %s: %s", ref.stream_id, stored.type, exc)

    async def _send(
        self,
        manager: type[ProcessManager],
        instance: str,
        stored: StoredEvent,
        decided: CommandDecided,
    ) -> None:
        ref = self._runtime.ref(manager, instance)
        state = await ref.state()
        if decided.seq not in state.outbox:
            return  # sent, and its outcome recorded, before
        category, target_id = decided.target.split("-", 1)
        aggregate = self._targets.get(category)
        if aggregate is None:
            msg = (
                f"{ref.stream_id} decided a command to {decided.target}, an aggregate this router "
                f"does not know: give it in ProcessRouter(aggregates=[...])"
            )
            raise LookupError(msg)
        target = self._runtime.ref(aggregate, target_id)
        command = self._command(aggregate, decided)
        # derived from the instance's stream and the version of the event that recorded it: a
        # resend after a crash is recognised by the target
        command_id = f"process:{stored.stream_id}:{stored.version}"
        reason: str | None = None
        try:
            await target.ask(command, command_id=command_id, causation_id=stored.event_id)
        except Rejected as exc:
            reason = str(exc) or type(exc).__name__
        outcome = Outcome(command, decided.target, reason)
        await ref.ask(RecordOutcome(decided.seq, outcome), command_id=f"outcome:{command_id}")

    def _command(self, aggregate: Any, decided: CommandDecided) -> object:
        decider = aggregate if isinstance(aggregate, Decider) else decider_of(aggregate)
        for kind in decider.command_types:
            if kind.__name__ == decided.command_type:
                return self._codec.decode_command(kind, decided.data)
        msg = f"{decider.name} handles no command named {decided.command_type}"
        raise LookupError(msg)
