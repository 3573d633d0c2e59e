"""Projection hosting: the projections a runtime runs, their tasks, waits and rebuilds.

It sits above the runtime's actors and sees the runtime only as what a projection's handlers
may use (:class:`ProjectionRuntime`): the runtime makes one host and hands its public
projection methods to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TypeVar, overload

import anyio
import anyio.abc
import attrs

from ._codec import Codec
from ._errors import DefinitionError, RuntimeClosedError, StoreError, WaitTimeoutError
from ._metrics import Metrics
from ._projection import (
    Projection,
    ProjectionRunner,
    compile_projection,
    transactional_refusal,
)
from ._projection_context import ProjectionRuntime, ProjectionStatus
from ._rebuilds import rebuild_refusal, reset_read_model
from .stores._base import EventStore

logger = logging.getLogger("actorsource.runtime")

P = TypeVar("P", bound=Projection)


@attrs.define(slots=True)
class _ProjectionEntry:
    """A projection added to the runtime: its runner, and the task running it."""

    runner: ProjectionRunner
    changed: asyncio.Event = attrs.Factory(asyncio.Event)
    scope: anyio.CancelScope = attrs.Factory(anyio.CancelScope)
    done: asyncio.Event = attrs.Factory(asyncio.Event)
    started: bool = False
    rebuild: ProjectionRunner | None = None

    def wire(self, runner: ProjectionRunner) -> None:
        self.runner = runner
        runner.on_progress = self.changed.set
        self.changed.set()


class ProjectionHost:
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
        self._entries: dict[str, _ProjectionEntry] = {}
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
        self, projection: Projection, *, batch_size: int = 500, poll_interval: float | None = None
    ) -> None:
        """See :meth:`Runtime.add_projection`."""
        compiled = compile_projection(type(projection))
        if compiled.name in self._entries:
            msg = f"a projection named {compiled.name!r} was already added to this runtime"
            raise ValueError(msg)
        refusal = transactional_refusal(compiled, self.store, self.store.capabilities())
        if refusal is not None:
            raise DefinitionError(refusal)
        if not self._accepting:
            raise RuntimeClosedError(f"cannot add projection {compiled.name!r}: runtime closed")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            msg = f"batch_size must be an int >= 1, got {batch_size!r}"
            raise ValueError(msg)
        runner = self._runner(projection, compiled.name, batch_size, poll_interval)
        entry = _ProjectionEntry(runner)
        entry.wire(runner)
        self._entries[compiled.name] = entry
        if self._open:
            self._start_projection(entry)

    def _runner(
        self,
        projection: Projection,
        name: str,
        batch_size: int,
        poll_interval: float | None,
        *,
        from_position: int = 1,
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
        )

    def _start_projection(self, entry: _ProjectionEntry) -> None:
        assert self._task_group is not None
        entry.scope, entry.done, entry.started = anyio.CancelScope(), asyncio.Event(), True
        self._task_group.start_soon(
            self._run_projection, entry, name=f"actorsource projection {entry.runner.name}"
        )

    async def _run_projection(self, entry: _ProjectionEntry) -> None:
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

    def _entry(self, projection: str | type[Projection] | Projection) -> _ProjectionEntry:
        if isinstance(projection, str):
            name = projection
        else:
            cls = projection if isinstance(projection, type) else type(projection)
            name = compile_projection(cls).name
        entry = self._entries.get(name)
        if entry is None:
            known = ", ".join(sorted(self._entries)) or "none"
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
        entry = self._entry(projection)
        if position is None:
            position = await self.store.head_position()
        runner = entry.runner
        if not runner.loaded and runner.compiled.durable and runner.compiled.mode != "inline":
            # still loading: the stored checkpoint says whether the read model is there already
            with contextlib.suppress(StoreError):
                if await self.store.load_checkpoint(runner.name) >= position:
                    return
        with anyio.move_on_after(timeout) as deadline:
            while not _reached(entry.runner, position):
                if entry.done.is_set() and not self._open:
                    msg = (
                        f"the runtime closed while waiting for projection {entry.runner.name!r} "
                        f"to reach position {position} (it stood at {entry.runner.position})"
                    )
                    raise RuntimeClosedError(msg)
                entry.changed.clear()
                await entry.changed.wait()
        if deadline.cancelled_caught and not _reached(entry.runner, position):
            status = entry.runner.status()
            detail = f"; state {status.state}"
            if status.last_error is not None:
                detail += f", last error: {status.last_error}"
            assert timeout is not None
            raise WaitTimeoutError(
                f"projection {status.name!r}",
                target=position,
                reached=status.position,
                timeout=timeout,
                detail=detail,
            )

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
        old = entry.runner
        if not isinstance(from_position, int) or from_position < 1:
            msg = f"from_position must be an int >= 1, got {from_position!r}"
            raise ValueError(msg)
        if factory is None and old.compiled.durable:
            if old.compiled.reset is None:
                raise DefinitionError(rebuild_refusal(old.compiled))
            return await self._rebuild_in_place(entry, from_position)
        fresh: Projection = factory() if factory is not None else type(old.projection)()
        compiled = compile_projection(type(fresh))
        if compiled.name != old.name:
            msg = f"the factory made a {type(fresh).__qualname__}, not a {old.name!r} projection"
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
            fresh, temporary, old.batch_size, old.poll_interval, from_position=from_position
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
        finally:
            entry.rebuild = None
        runner.name = old.name
        runner.state = "catching_up"
        entry.wire(runner)
        self._start_projection(entry)
        self._log_rebuilt(old.name, from_position, runner.position, in_place=False)
        return fresh

    async def _rebuild_in_place(self, entry: _ProjectionEntry, from_position: int) -> Projection:
        """Stop a durable projection, reset its read model and checkpoint, start it again."""
        old = entry.runner
        await self._stop_projection(entry)
        try:
            await reset_read_model(
                self.store, old.projection, name=old.name, from_position=from_position
            )
        finally:
            # reset or not, the projection goes on from its stored checkpoint
            runner = self._runner(old.projection, old.name, old.batch_size, old.poll_interval)
            entry.wire(runner)
            self._start_projection(entry)
        self._log_rebuilt(old.name, from_position, from_position - 1, in_place=True)
        return old.projection

    async def _stop_projection(self, entry: _ProjectionEntry) -> None:
        entry.scope.cancel()
        if entry.started:
            await entry.done.wait()

    def _log_rebuilt(self, name: str, from_position: int, position: int, *, in_place: bool) -> None:
        logger.info(
            "projection rebuilt" if not in_place else "projection reset; rebuilding in place",
            extra={"projection": name, "from_position": from_position, "position": position},
        )


def _reached(runner: ProjectionRunner, position: int) -> bool:
    """Whether a projection handled every event up to ``position`` (and, inline, is live)."""
    if not runner.loaded or runner.position < position:
        return False
    # an inline projection serves reads-after-writes only once appends call it
    return runner.compiled.mode != "inline" or runner.state == "live"
