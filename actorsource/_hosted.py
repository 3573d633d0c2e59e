"""One projection hosted by a runtime (or one slice of a sliced one): its runner, the task
running it, its gate; and waiting until such entries reached a position."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import anyio
import attrs

from ._errors import RuntimeClosedError, StoreError, WaitTimeoutError
from ._projection import Projection, ProjectionRunner
from ._slices import ProjectionSlice
from .stores._base import EventStore


@attrs.frozen(slots=True)
class GatedProjection:
    """A background projection, or one slice of a sliced one, that a gate runs or holds."""

    #: the name it runs under, and its checkpoint's (a slice's: ``NAME:slice:INDEX/COUNT``)
    name: str
    #: the projection's name
    projection: str
    #: which slice (None: a projection not sliced)
    slice: ProjectionSlice | None
    #: whether its gate is open (it runs here)
    running: bool


@attrs.define(slots=True)
class ProjectionEntry:
    """A projection added to the runtime: its runner, and the task running it."""

    runner: ProjectionRunner
    changed: asyncio.Event = attrs.Factory(asyncio.Event)
    scope: anyio.CancelScope = attrs.Factory(anyio.CancelScope)
    done: asyncio.Event = attrs.Factory(asyncio.Event)
    started: bool = False
    rebuild: ProjectionRunner | None = None
    #: which slice of its projection it runs (None: a plain projection)
    slice: ProjectionSlice | None = None
    #: makes a fresh instance for a rebuild (a slice's factory, given its slice)
    make: Callable[[], Projection] | None = None
    #: whether it may run (a gated host opens and closes it; an ungated one never closes it)
    gate_open: bool = True

    @property
    def projection_name(self) -> str:
        """The projection's name (a slice's runner runs under its own)."""
        return self.runner.compiled.name

    @property
    def gated(self) -> bool:
        """Whether a gate can hold it: a durable background projection. Inline ones run with
        every append, and a read model in memory is each process's own: never gated."""
        compiled = self.runner.compiled
        return compiled.durable and compiled.mode != "inline"

    def wire(self, runner: ProjectionRunner) -> None:
        self.runner = runner
        runner.on_progress = self.changed.set
        self.changed.set()


async def wait_for_entries(
    store: EventStore,
    entries: Sequence[ProjectionEntry],
    position: int,
    timeout: float | None,  # noqa: ASYNC109  # the error names where it stood
    *,
    closing: Callable[[], bool],
) -> None:
    """Wait until every entry (a projection, or each slice of one) handled every event up to
    ``position``; ``closing`` tells whether the runtime is closing.

    :raises WaitTimeoutError: naming the entry that was not there in time, and where it stood
    :raises RuntimeClosedError: if the runtime closes meanwhile
    """
    waiting = entries[0]
    with anyio.move_on_after(timeout) as deadline:
        for waiting in entries:
            await _wait_for_entry(store, waiting, position, closing)
    if deadline.cancelled_caught and not _reached(waiting.runner, position):
        status = waiting.runner.status()
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


async def _wait_for_entry(
    store: EventStore, entry: ProjectionEntry, position: int, closing: Callable[[], bool]
) -> None:
    """Wait until one projection or slice handled every event up to ``position``: as its
    runner tells, or, while it does not run here, as its stored checkpoint does."""
    while True:
        runner = entry.runner
        durable = runner.compiled.durable and runner.compiled.mode != "inline"
        if not entry.gate_open:  # a durable one, run elsewhere: its stored checkpoint tells
            if closing():
                msg = (
                    f"the runtime closed while waiting for projection {runner.name!r} "
                    f"to reach position {position} (its stored checkpoint was behind)"
                )
                raise RuntimeClosedError(msg)
            if await _stored_reached(store, runner, position):
                return
            # another member moves it: look again when polled, or when the gate opens
            entry.changed.clear()
            with anyio.move_on_after(runner.poll_interval):
                await entry.changed.wait()
            continue
        if not runner.loaded and durable and await _stored_reached(store, runner, position):
            return  # still loading: the stored checkpoint says it is there already
        if _reached(runner, position):
            return
        if entry.done.is_set() and closing():
            msg = (
                f"the runtime closed while waiting for projection {runner.name!r} "
                f"to reach position {position} (it stood at {runner.position})"
            )
            raise RuntimeClosedError(msg)
        entry.changed.clear()
        await entry.changed.wait()


async def _stored_reached(store: EventStore, runner: ProjectionRunner, position: int) -> bool:
    with contextlib.suppress(StoreError):
        stored = await store.load_checkpoint(runner.name)
        if runner.state == "standby":  # what its status reports meanwhile
            runner.position = max(runner.position, stored)
            runner.head = max(runner.head, runner.position)
        return stored >= position
    return False


def _reached(runner: ProjectionRunner, position: int) -> bool:
    """Whether a projection handled every event up to ``position`` (and, inline, is live)."""
    if not runner.loaded or runner.position < position:
        return False
    # an inline projection serves reads-after-writes only once appends call it
    return runner.compiled.mode != "inline" or runner.state == "live"
