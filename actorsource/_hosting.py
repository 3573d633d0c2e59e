"""Projection hosting: the projections a runtime runs, their tasks, waits and rebuilds.

It sits above the runtime's actors and sees the runtime only as what a projection's handlers
may use (:class:`ProjectionRuntime`): the runtime makes one host and hands its public
projection methods to it.

Each projection, or each slice of a sliced one, is an entry with its own runner and
checkpoint. A gated host (:meth:`ProjectionHost.gate`: a member of a cluster) runs a
background entry only while its gate is open, which the cluster's leases drive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar, overload

import anyio
import anyio.abc

from ._codec import Codec
from ._errors import DefinitionError, RuntimeClosedError
from ._hosted import GatedProjection, ProjectionEntry, wait_for_entries
from ._hosting_rebuilds import HostRebuilds
from ._metrics import Metrics
from ._policies import check_seconds
from ._projection import (
    CompiledProjection,
    Projection,
    ProjectionRunner,
    compile_projection,
    transactional_refusal,
)
from ._projection_context import ProjectionRuntime, ProjectionStatus
from ._slices import MAX_SLICES, ProjectionSlice
from .stores._base import EventStore

logger = logging.getLogger("actorsource.runtime")

P = TypeVar("P", bound=Projection)


class ProjectionHost(HostRebuilds):
    """The projections added to one runtime: started with it, stopped before it closes."""

    def __init__(
        self,
        store: EventStore,
        codec: Codec,
        runtime: ProjectionRuntime,
        *,
        metrics: Metrics | None,
        poll_interval: float,
    ) -> None:
        self.store = store
        self._codec = codec
        self._runtime = runtime
        self.metrics = metrics
        self.poll_interval = poll_interval
        #: by the name each runs under (a slice's: ``NAME:slice:INDEX/COUNT``)
        self._entries: dict[str, ProjectionEntry] = {}
        #: a sliced projection's name -> its slices' entry names, by index
        self._sliced: dict[str, tuple[str, ...]] = {}
        #: background projections run only while their gate is open
        self._gated = False
        self._task_group: anyio.abc.TaskGroup | None = None
        #: the runtime is open: projections run, rebuilds may start
        self._open = False
        #: new projections may be added (not once the runtime is closing)
        self._accepting = True

    def open(self, task_group: anyio.abc.TaskGroup) -> None:
        """Start every projection added so far, in the runtime's task group."""
        self._task_group = task_group
        self._open = True
        for entry in self._entries.values():
            if entry.gate_open:
                self._start_projection(entry)

    def closing(self) -> None:
        """The runtime is closing: no more projections or rebuilds."""
        self._open = self._accepting = False

    async def close(self) -> None:
        """Stop every projection and wait for it (waiters learn that the runtime closed)."""
        await self._stop_projections()

    def statuses(self) -> tuple[ProjectionStatus, ...]:
        """Each projection's status, a rebuild in progress beside the projection it rebuilds."""
        return tuple(
            status
            for entry in self._entries.values()
            for status in (
                entry.runner.status(),
                *([entry.rebuild.status()] if entry.rebuild is not None else []),
            )
        )

    def current_statuses(self) -> list[ProjectionStatus]:
        """Each projection's status (the instance serving reads), for health checks."""
        return [entry.runner.status() for entry in self._entries.values()]

    def add_projection(
        self,
        projection: Projection | Callable[[ProjectionSlice], Projection],
        *,
        slices: int | None = None,
        batch_size: int = 500,
        poll_interval: float | None = None,
    ) -> None:
        """See :meth:`Runtime.add_projection`."""
        if not self._accepting:
            raise RuntimeClosedError(f"cannot add projection {projection!r}: runtime closed")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            msg = f"batch_size must be an int >= 1, got {batch_size!r}"
            raise ValueError(msg)
        if poll_interval is not None:
            check_seconds("poll_interval", poll_interval)
        if slices is not None:
            self._add_sliced(projection, slices, batch_size, poll_interval)
            return
        if not isinstance(projection, Projection):
            msg = (
                f"add_projection takes a Projection instance, got {projection!r}; to split a "
                "projection into slices give a factory taking a ProjectionSlice and slices=N"
            )
            raise DefinitionError(msg)
        compiled = self._admit(projection)
        runner = self._runner(projection, compiled.name, batch_size, poll_interval)
        self._add_entry(ProjectionEntry(runner))

    def _admit(self, projection: Projection) -> CompiledProjection:
        """Compile a projection and check that this runtime can run it under its name."""
        compiled = compile_projection(type(projection))
        if compiled.name in self._entries or compiled.name in self._sliced:
            msg = f"a projection named {compiled.name!r} was already added to this runtime"
            raise ValueError(msg)
        refusal = transactional_refusal(compiled, self.store, self.store.capabilities())
        if refusal is not None:
            raise DefinitionError(refusal)
        return compiled

    def _add_sliced(
        self,
        factory: object,
        count: int,
        batch_size: int,
        poll_interval: float | None,
    ) -> None:
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_SLICES:
            msg = f"slices must be an int from 1 to {MAX_SLICES}, got {count!r}"
            raise ValueError(msg)
        if isinstance(factory, Projection) or not callable(factory):
            msg = (
                f"a sliced projection is added with a factory making each slice's instance "
                f"(a callable taking a ProjectionSlice), got {factory!r}: for example "
                "add_projection(lambda part: Balances(part), slices=4)"
            )
            raise TypeError(msg)
        made: list[tuple[ProjectionSlice, Projection]] = []
        for index in range(count):
            part = ProjectionSlice(index, count)
            instance = factory(part)
            if not isinstance(instance, Projection):
                msg = f"slice factory {factory!r} made {instance!r} for {part}: not a Projection"
                raise TypeError(msg)
            made.append((part, instance))
        compiled = self._admit(made[0][1])
        for part, instance in made[1:]:
            name = compile_projection(type(instance)).name
            if name != compiled.name:
                msg = (
                    f"the slice factory made a {compiled.name!r} projection for slice 0 but a "
                    f"{name!r} one for slice {part.index}: every slice is one projection"
                )
                raise DefinitionError(msg)
        if compiled.mode == "inline":
            msg = (
                f"projection {compiled.name!r} is inline: its handlers run in the transaction "
                "of every append, in the process that appends, so slices would not split its "
                "work; use exactly_once or at_least_once to slice it"
            )
            raise DefinitionError(msg)
        names = []
        for part, instance in made:
            name = part.checkpoint_name(compiled.name)
            runner = self._runner(instance, name, batch_size, poll_interval, slice=part)
            make = _bound(factory, part)
            self._add_entry(ProjectionEntry(runner, slice=part, make=make))
            names.append(name)
        self._sliced[compiled.name] = tuple(names)

    def _add_entry(self, entry: ProjectionEntry) -> None:
        entry.wire(entry.runner)
        entry.gate_open = not (self._gated and entry.gated)
        if not entry.gate_open:
            entry.runner.state = "standby"
        self._entries[entry.runner.name] = entry
        if self._open and entry.gate_open:
            self._start_projection(entry)

    # -- gates (what a cluster's leases drive) ----------------------------------------------------

    def gate(self) -> None:
        """Run durable background projections (and slices) only while their gates are open:
        from now on each one added starts with its gate closed (see :meth:`open_gate`); those
        added before keep running until :meth:`close_gate`. Inline projections (run with
        every append) and read models in memory (each process's own) are never gated."""
        self._gated = True

    def gated_entries(self) -> tuple[GatedProjection, ...]:
        """The projections and slices a gate holds, each with its own checkpoint."""
        return tuple(
            GatedProjection(name, entry.projection_name, entry.slice, entry.gate_open)
            for name, entry in self._entries.items()
            if entry.gated
        )

    async def open_gate(self, name: str) -> None:
        """Let the projection or slice running under ``name`` run: it starts (a durable one
        from its stored checkpoint, one in memory from where it stopped here).

        :raises LookupError: if there is no such gated projection or slice
        """
        entry = self._gated_entry(name)
        if entry.gate_open:
            return
        entry.gate_open = True
        entry.runner.state = "loading"  # its checkpoint, first
        if self._open:
            self._start_projection(entry)

    async def close_gate(self, name: str) -> None:
        """Stop the projection or slice running under ``name`` and wait until it stopped (a
        batch in progress is abandoned: an exactly-once one commits nothing, an at-least-once
        one is delivered again); it keeps its place, and waits judge it by its stored
        checkpoint meanwhile.

        :raises LookupError: if there is no such gated projection or slice
        """
        entry = self._gated_entry(name)
        if not entry.gate_open:
            return
        if entry.rebuild is not None:
            # refused before anything changes: the rebuild starts the projection again when
            # it is done, and a caller that retries then (a cluster's lease keeper) closes it
            msg = f"projection {name!r} is being rebuilt here; close its gate when it is done"
            raise ValueError(msg)
        entry.gate_open = False
        await self._stop_projection(entry)
        entry.runner.state = "standby"
        entry.changed.set()  # waiters turn to the stored checkpoint

    def _gated_entry(self, name: str) -> ProjectionEntry:
        entry = self._entries.get(name)
        if entry is None or not entry.gated:
            known = ", ".join(sorted(e.name for e in self.gated_entries())) or "none"
            msg = f"no gated projection or slice named {name!r} in this runtime (gated: {known})"
            raise LookupError(msg)
        return entry

    def _runner(
        self,
        projection: Projection,
        name: str,
        batch_size: int,
        poll_interval: float | None,
        *,
        from_position: int = 1,
        slice: ProjectionSlice | None = None,
    ) -> ProjectionRunner:
        return ProjectionRunner(
            projection,
            name=name,
            from_position=from_position,
            store=self.store,
            codec=self._codec,
            runtime=self._runtime,
            metrics=self.metrics,
            batch_size=batch_size,
            poll_interval=self.poll_interval if poll_interval is None else poll_interval,
            max_backoff=30.0,
            slice=slice,
        )

    def _start_projection(self, entry: ProjectionEntry) -> None:
        assert self._task_group is not None
        if entry.started and not entry.done.is_set():
            return  # its task still runs: a second one would deliver every event twice
        entry.scope, entry.done, entry.started = anyio.CancelScope(), asyncio.Event(), True
        self._task_group.start_soon(
            self._run_projection, entry, name=f"actorsource projection {entry.runner.name}"
        )

    async def _run_projection(self, entry: ProjectionEntry) -> None:
        runner = entry.runner
        try:
            with entry.scope:
                await runner.start()
                if runner.compiled.mode == "inline":
                    await runner.run_inline()
                else:
                    await runner.run()
        finally:
            transactions = self.store.capabilities().transactional
            if runner.compiled.mode == "inline" and transactions is not None:
                transactions.remove_inline_projection(runner.name)
            runner.state = "stopped"
            entry.done.set()
            entry.changed.set()  # waiters look again: the runtime may be closing

    async def _stop_projections(self) -> None:
        for entry in self._entries.values():
            entry.scope.cancel()
        for entry in self._entries.values():
            if entry.started:
                await entry.done.wait()
            else:
                entry.done.set()
            entry.changed.set()  # waiters learn that the runtime closed

    def _name_of(self, projection: str | type[Projection] | Projection) -> str:
        if isinstance(projection, str):
            return projection
        cls = projection if isinstance(projection, type) else type(projection)
        return compile_projection(cls).name

    def _entries_of(self, projection: str | type[Projection] | Projection) -> list[ProjectionEntry]:
        """The entries of a projection: itself, or each of its slices."""
        name = self._name_of(projection)
        sliced = self._sliced.get(name)
        if sliced is not None:
            return [self._entries[slice_name] for slice_name in sliced]
        return [self._entry(name)]

    def _entry(self, projection: str | type[Projection] | Projection) -> ProjectionEntry:
        name = self._name_of(projection)
        entry = self._entries.get(name)
        if entry is None:
            sliced = self._sliced.get(name)
            if sliced is not None:
                msg = (
                    f"projection {name!r} is split into {len(sliced)} slices, each its own "
                    f"instance: name one, for example {sliced[0]!r}"
                )
                raise LookupError(msg)
            known = ", ".join(sorted({*self._entries, *self._sliced})) or "none"
            msg = f"no projection named {name!r} was added to this runtime (added: {known})"
            raise LookupError(msg)
        return entry

    @overload
    def projection(self, projection: type[P]) -> P: ...

    @overload
    def projection(self, projection: str) -> Projection: ...

    def projection(self, projection: str | type[Projection]) -> Projection:
        """See :meth:`Runtime.projection`."""
        return self._entry(projection).runner.projection

    async def wait_for_projection(
        self,
        projection: str | type[Projection] | Projection,
        position: int | None = None,
        *,
        timeout: float | None = 30.0,  # noqa: ASYNC109  # the error names where it stood
    ) -> None:
        """See :meth:`Runtime.wait_for_projection`."""
        if timeout is not None and not timeout > 0:
            msg = f"timeout must be > 0 seconds or None, got {timeout!r}"
            raise ValueError(msg)
        entries = self._entries_of(projection)
        if position is None:
            position = await self.store.head_position()
        await wait_for_entries(
            self.store, entries, position, timeout, closing=lambda: not self._accepting
        )

    async def _stop_projection(self, entry: ProjectionEntry) -> None:
        entry.scope.cancel()
        if entry.started:
            await entry.done.wait()


def _bound(
    factory: Callable[[ProjectionSlice], Projection], part: ProjectionSlice
) -> Callable[[], Projection]:
    """A slice's factory, given its slice (a fresh instance for a rebuild)."""
    return lambda: factory(part)
