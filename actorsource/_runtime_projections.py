"""What the runtime offers to run projections: adding them, finding them, waiting for them and
rebuilding them.

A part of :class:`Runtime`, apart so that the front door stays readable; the projection host
(``_hosting``) does the work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, overload

from ._hosting import ProjectionHost
from ._projection import Projection
from ._slices import ProjectionSlice

P = TypeVar("P", bound=Projection)


class RuntimeProjections:
    """The runtime's projections (see :class:`Runtime`)."""

    _hosting: ProjectionHost

    # -- projections ---------------------------------------------------------------------------

    @overload
    def add_projection(
        self,
        projection: Projection,
        *,
        batch_size: int = 500,
        poll_interval: float | None = None,
    ) -> None: ...

    @overload
    def add_projection(
        self,
        projection: Callable[[ProjectionSlice], Projection],
        *,
        slices: int,
        batch_size: int = 500,
        poll_interval: float | None = None,
    ) -> None: ...

    def add_projection(
        self,
        projection: Projection | Callable[[ProjectionSlice], Projection],
        *,
        slices: int | None = None,
        batch_size: int = 500,
        poll_interval: float | None = None,
    ) -> None:
        """Run a projection from its checkpoint, in the background (or inline with appends).

        May be called before entering the runtime (it starts on entry) or while it is open.

        With ``slices=N``, ``projection`` is a factory called with each
        :class:`ProjectionSlice` (``index`` 0 to N-1, ``count`` N) to make that slice's
        instance: the projection's work is split by a stable hash of the stream id
        (:func:`slice_of`), each slice handling its streams' events, in order, under its own
        checkpoint (``NAME:slice:INDEX/N``) and runner; in a cluster each slice is leased to
        one member. Changing N starts every slice again from the beginning of the log (new
        checkpoints), as a rename does. Inline projections cannot be sliced.

        :param slices: how many slices to split the projection into (``None``: not sliced)
        :param batch_size: events handled per checkpoint save (per transaction in the
            exactly-once mode)
        :param poll_interval: seconds between polls for other processes' events (default:
            the runtime's ``poll_interval``)
        :raises DefinitionError: if the projection class is malformed, or needs transactions
            the store does not have, or is inline and sliced
        :raises ValueError: if a projection of that name was already added, or ``slices`` is
            not an int from 1 to 1024
        :raises TypeError: if ``slices`` is given with something other than a factory of
            projections
        """
        self._hosting.add_projection(
            projection, slices=slices, batch_size=batch_size, poll_interval=poll_interval
        )

    @overload
    def projection(self, projection: type[P]) -> P: ...

    @overload
    def projection(self, projection: str) -> Projection: ...

    def projection(self, projection: str | type[Projection]) -> Projection:
        """Return the projection instance serving reads now (by class or name).

        After a rebuild this is the rebuilt instance. A sliced projection's slices are each
        an instance: name one (``"NAME:slice:INDEX/COUNT"``).

        :raises LookupError: if no such projection was added, or it is sliced
        """
        return self._hosting.projection(projection)

    async def wait_for_projection(
        self,
        projection: str | type[Projection] | Projection,
        position: int | None = None,
        *,
        timeout: float | None = 30.0,  # noqa: ASYNC109  # the error names where it stood
    ) -> None:
        """Wait until a projection handled every event up to ``position``.

        For an inline projection, also until appends run its handlers (so that every later
        ``ask`` returns with the read model up to date). A position already reached returns at
        once (right after :meth:`add_projection` too, once its checkpoint is loaded).

        A sliced projection is there when every slice is. A durable projection or slice that
        this runtime does not run now (in a cluster, another member holds its lease) is
        judged by its stored checkpoint, read again every ``poll_interval``.

        :param position: a global position (for example ``recorded[-1].position`` of an
            ``ask``), default: the store's head now
        :param timeout: seconds to wait at most (``None``: as long as it takes, also while a
            failing handler is retried)
        :raises LookupError: if no such projection was added
        :raises WaitTimeoutError: if the projection did not get there in time (the error says
            where it stood, and why if it is failing)
        :raises RuntimeClosedError: if the runtime closes while waiting
        """
        await self._hosting.wait_for_projection(projection, position, timeout=timeout)

    async def rebuild_projection(
        self,
        projection: str | type[Projection],
        *,
        factory: Callable[[], P] | None = None,
        from_position: int = 1,
    ) -> Projection:
        """Build a projection again from ``from_position``; return the instance serving then.

        A sliced projection is rebuilt one slice at a time, named ``"NAME:slice:INDEX/COUNT"``
        (its fresh instance made by the slice factory, unless ``factory`` is given).

        - An in-memory read model, or any projection given a ``factory``: a fresh instance is
          built beside the current one, which keeps serving (and following new events) until
          the fresh one has caught up with the head; then the fresh one takes its place and
          its checkpoint. A durable fresh instance writes elsewhere (new tables), and is
          ``reset`` first if it defines ``reset``.
        - A durable read model without a ``factory`` is rebuilt in place: the projection
          stops, its ``reset(self, ctx)`` clears the read model (with the checkpoint's reset, in
          one transaction for exactly-once and inline projections), and it starts again from
          ``from_position``. Reads meanwhile see the read model filling up.

        :param factory: makes the fresh instance (default: the projection's class, called
            with no arguments)
        :raises LookupError: if no such projection was added
        :raises DefinitionError: if the projection is durable, has no ``reset`` and no
            ``factory`` was given (a rebuild in place would count every event twice)

        A handler that keeps failing holds the rebuild at that event (retried with backoff, as
        always); the current instance goes on serving meanwhile.
        """
        return await self._hosting.rebuild_projection(
            projection, factory=factory, from_position=from_position
        )
