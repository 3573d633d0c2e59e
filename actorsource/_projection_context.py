"""What a projection sees: the runtime running it (:class:`ProjectionRuntime`), each event's
context (:class:`ProjectionContext`), a rebuild's (:class:`ResetContext`), and what it reports
(:class:`ProjectionStatus`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar, overload

import attrs

from ._aggregate import Aggregate
from ._decider import Decider
from ._records import RecordedEvent
from ._refs import AggregateRef
from ._slices import ProjectionSlice

A = TypeVar("A", bound=Aggregate)
S = TypeVar("S")
#: what ``ctx.transaction`` is: ``sqlite3.Connection`` (SQLite), ``asyncpg.Connection``
#: (PostgreSQL), ``None`` (in memory or at-least-once)
Tx = TypeVar("Tx")


class ProjectionRuntime(Protocol):
    """What projections see of the runtime running them: refs, to send commands with, and
    aggregates' past states (a :class:`~actorsource.Runtime` is one)."""

    @overload
    def ref(self, aggregate: type[A], aggregate_id: str) -> AggregateRef[A]: ...

    @overload
    def ref(self, aggregate: Decider[Any, Any, S], aggregate_id: str) -> AggregateRef[S]: ...

    @overload
    async def state_at(
        self,
        aggregate: type[A],
        aggregate_id: str,
        *,
        version: int | None = None,
        at: datetime | None = None,
    ) -> A: ...

    @overload
    async def state_at(
        self,
        aggregate: Decider[Any, Any, S],
        aggregate_id: str,
        *,
        version: int | None = None,
        at: datetime | None = None,
    ) -> S: ...


@attrs.frozen(slots=True)
class ProjectionContext(Generic[Tx]):
    """What a handler may want besides the event: where it is stored, and the transaction.

    Annotate ``ctx`` with the transaction your store gives, for a typed ``ctx.transaction``:
    ``ProjectionContext[sqlite3.Connection]`` (SQLite), ``ProjectionContext[asyncpg.Connection]``
    (PostgreSQL); plain ``ProjectionContext`` leaves it untyped.
    """

    #: the event as stored: stream, version, position, id, commit time and metadata
    record: RecordedEvent[Any]
    #: the store's transaction in the exactly-once and inline modes: on SQLite the writer's
    #: ``sqlite3.Connection`` (on its thread, inside its transaction); on PostgreSQL an
    #: ``asyncpg.Connection`` inside the transaction, its ``search_path`` starting with the
    #: store's schema; ``None`` on the in-memory store. ``None`` in the at-least-once mode.
    #: Never commit or roll it back: the store does, with the checkpoint
    transaction: Tx
    #: the runtime running the projection (to send commands from an at-least-once handler:
    #: they join the event's conversation and name it as their cause, see
    #: :func:`~actorsource.caused_by`); exactly-once and inline handlers run inside the store's
    #: transaction, on SQLite on its writer thread, and must not use it
    runtime: ProjectionRuntime


@attrs.frozen(slots=True)
class ResetContext(Generic[Tx]):
    """What a projection's ``reset`` gets: which rebuild it is, and the transaction (typed as
    in :class:`ProjectionContext`)."""

    #: the name of the checkpoint being reset (the projection's name, or a temporary name while
    #: a fresh instance is built beside the serving one)
    name: str
    #: the first position the rebuild delivers again
    from_position: int
    #: the store's transaction for exactly-once and inline projections (as handlers get it);
    #: ``None`` for at-least-once ones
    transaction: Tx


@attrs.frozen(slots=True)
class ProjectionStatus:
    """A projection's progress, as ``Runtime.statistics()`` reports it."""

    #: the projection's name (its checkpoint key); a slice's is ``NAME:slice:INDEX/COUNT``
    name: str
    #: its delivery mode
    mode: str
    #: ``"loading"`` (its checkpoint), ``"catching_up"``, ``"live"``, ``"failing"`` (retrying
    #: after a handler or store error), ``"rebuilding"``, ``"standby"`` (its gate is closed:
    #: in a cluster, another member holds its lease) or ``"stopped"``
    state: str
    #: the last position it handled (its checkpoint)
    position: int
    #: the store's last position, as last seen
    head_position: int
    #: events it has still to handle
    lag_events: int
    #: how long ago the oldest event it has still to handle was committed (0 when caught up)
    lag_seconds: float
    #: the error it is retrying after, if any
    last_error: str | None
    #: whether its read model outlives the process (it resumes from a stored checkpoint)
    durable: bool = True
    #: which slice of a sliced projection it is (None: not sliced)
    slice: ProjectionSlice | None = None
