"""Rebuilding a hosted projection: beside the one serving reads (then swapped in), or in
place through its ``reset`` (a part of :class:`ProjectionHost`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from ._errors import DefinitionError, RuntimeClosedError
from ._hosted import ProjectionEntry
from ._projection import Projection, ProjectionRunner, compile_projection
from ._rebuilds import rebuild_refusal, reset_read_model
from ._slices import ProjectionSlice
from .stores._base import EventStore

logger = logging.getLogger("actorsource.runtime")

P = TypeVar("P", bound=Projection)


class HostRebuilds:
    """The rebuilds of :class:`ProjectionHost` (which provides what is declared here)."""

    store: EventStore
    _open: bool

    def _entry(self, projection: str | type[Projection] | Projection) -> ProjectionEntry:
        raise NotImplementedError  # the host's

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
        raise NotImplementedError  # the host's

    def _start_projection(self, entry: ProjectionEntry) -> None:
        raise NotImplementedError  # the host's

    async def _stop_projection(self, entry: ProjectionEntry) -> None:
        raise NotImplementedError  # the host's

    async def rebuild_projection(
        self,
        projection: str | type[Projection],
        *,
        factory: Callable[[], P] | None = None,
        from_position: int = 1,
    ) -> Projection:
        """See :meth:`Runtime.rebuild_projection`."""
        entry = self._entry(projection)
        if not self._open:
            raise RuntimeClosedError(f"cannot rebuild {entry.runner.name!r}: runtime not open")
        if entry.rebuild is not None:
            msg = f"projection {entry.runner.name!r} is already being rebuilt"
            raise ValueError(msg)
        if not entry.gate_open:
            msg = (
                f"projection {entry.runner.name!r} does not run here now (its gate is closed: "
                "in a cluster, another member holds its lease); rebuild it where it runs"
            )
            raise ValueError(msg)
        old = entry.runner
        if not isinstance(from_position, int) or from_position < 1:
            msg = f"from_position must be an int >= 1, got {from_position!r}"
            raise ValueError(msg)
        if factory is None and old.compiled.durable:
            if old.compiled.reset is None:
                raise DefinitionError(rebuild_refusal(old.compiled))
            return await self._rebuild_in_place(entry, from_position)
        make = factory or entry.make or type(old.projection)
        fresh: Projection = make()
        compiled = compile_projection(type(fresh))
        if compiled.name != old.compiled.name:
            wanted = old.compiled.name
            msg = f"the factory made a {type(fresh).__qualname__}, not a {wanted!r} projection"
            raise DefinitionError(msg)
        temporary = f"{old.name}:rebuild"
        if compiled.durable:
            if compiled.reset is not None:
                await reset_read_model(
                    self.store, fresh, name=temporary, from_position=from_position
                )
            else:
                await self.store.save_checkpoint(temporary, from_position - 1)
        runner = self._runner(
            fresh,
            temporary,
            old.batch_size,
            old.poll_interval,
            from_position=from_position,
            slice=entry.slice,
        )
        runner.state = "rebuilding"
        entry.rebuild = runner
        try:
            await runner.start()
            runner.state = "rebuilding"
            await runner.run(until_caught_up=True)
            # swap: stop the old one first, so that its last checkpoint save comes before ours
            await self._stop_projection(entry)
            if compiled.durable:
                await self.store.save_checkpoint(old.name, runner.position)
                # the rebuild's own checkpoint would hold archiving back for ever
                delete = self.store.capabilities().delete_checkpoint
                if delete is not None:
                    await delete(temporary)
        finally:
            entry.rebuild = None
        runner.name = old.name
        runner.state = "catching_up"
        entry.wire(runner)
        self._start_if_open(entry)
        self._log_rebuilt(old.name, from_position, runner.position, in_place=False)
        return fresh

    async def _rebuild_in_place(self, entry: ProjectionEntry, from_position: int) -> Projection:
        """Stop a durable projection, reset its read model and checkpoint, start it again."""
        old = entry.runner
        await self._stop_projection(entry)
        try:
            await reset_read_model(
                self.store, old.projection, name=old.name, from_position=from_position
            )
        finally:
            # reset or not, the projection goes on from its stored checkpoint
            runner = self._runner(
                old.projection, old.name, old.batch_size, old.poll_interval, slice=entry.slice
            )
            entry.wire(runner)
            self._start_if_open(entry)
        self._log_rebuilt(old.name, from_position, from_position - 1, in_place=True)
        return old.projection

    def _start_if_open(self, entry: ProjectionEntry) -> None:
        """Start a rebuilt projection again, unless its gate is closed (it waits on standby)."""
        if entry.gate_open:
            self._start_projection(entry)
        else:
            entry.runner.state = "standby"
            entry.changed.set()

    def _log_rebuilt(self, name: str, from_position: int, position: int, *, in_place: bool) -> None:
        logger.info(
            "projection rebuilt" if not in_place else "projection reset; rebuilding in place",
            extra={"projection": name, "from_position": from_position, "position": position},
        )
