"""What the runtime offers on the read side of its store: time travel, subscriptions to the log
as domain events, and retention (archiving and deleting streams).

A part of :class:`Runtime`, apart so that the front door stays readable; it works through the
runtime's dispatcher, codec, projection host and retention, composed in ``Runtime.__init__``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any, TypeVar, overload

from ._aggregate import Aggregate
from ._archiving import Archiver, Retention
from ._codec import Codec
from ._decider import Decider
from ._dispatcher import Dispatcher, RuntimeState
from ._errors import NaiveDatetimeError, RuntimeClosedError, VersionNotReachedError
from ._hosting import ProjectionHost
from ._reading import Deciders, matching_records, state_at
from ._records import AppendResult, ArchivedStream, RecordedEvent
from ._rehydration import Rehydration
from ._shredding import Shredder
from .stores._base import EventStore

#: the states of projections that are not reading in this runtime (see ProjectionStatus)
_NOT_READING = frozenset({"standby", "stopped"})

A = TypeVar("A", bound=Aggregate)
S = TypeVar("S")


class RuntimeReading:
    """The runtime's time travel, subscriptions and retention (see :class:`Runtime`)."""

    #: the event store
    store: EventStore
    poll_interval: float
    _codec: Codec
    _deciders: Deciders
    _dispatcher: Dispatcher
    _hosting: ProjectionHost
    _retention: Retention
    _subscribers: dict[object, int]
    _shredder: Shredder

    @property
    def _state(self) -> RuntimeState:
        return self._dispatcher.state

    def _decider(self, aggregate: Any, aggregate_id: str) -> Decider[Any, Any, Any]:
        if not isinstance(aggregate_id, str) or not aggregate_id:
            msg = f"an aggregate id must be a non-empty str, got {aggregate_id!r}"
            raise ValueError(msg)
        return self._decider_for(aggregate)

    def _decider_for(self, aggregate: Any) -> Decider[Any, Any, Any]:
        return self._deciders.decider_of(aggregate)

    # -- time travel ---------------------------------------------------------------------------

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

    async def state_at(
        self,
        aggregate: Any,
        aggregate_id: str,
        *,
        version: int | None = None,
        at: datetime | None = None,
    ) -> Any:
        """Return an aggregate's state as it was after event ``version``, or at time ``at``.

        Replays from the nearest snapshot at or before that version (if there is a usable
        one); the live actor, if any, is not involved. ``version=0``, or a time before the
        first event, gives the initial state.

        :raises VersionNotReachedError: if the stream has not reached ``version`` yet
        :raises NaiveDatetimeError: if ``at`` has no time zone
        :raises ValueError: unless exactly one of ``version`` and ``at`` is given, or if
            ``version`` is not an int >= 0 (both errors above are ValueErrors too)
        """
        decider = self._decider(aggregate, aggregate_id)
        stream_id = f"{decider.name}-{aggregate_id}"
        if (version is None) == (at is None):
            msg = f"state_at({stream_id!r}) needs exactly one of version= and at="
            raise ValueError(msg)
        if self._state is not RuntimeState.OPEN:
            raise RuntimeClosedError(self._dispatcher.closed_message(stream_id))
        if at is not None:
            if isinstance(at, datetime) and at.tzinfo is None:
                where = f"state_at of {decider.name} {stream_id!r}: "
                raise NaiveDatetimeError("at", at, stream_id=stream_id, where=where)
            version = await self.store.stream_version(stream_id, at=at)
        else:
            if not isinstance(version, int) or isinstance(version, bool) or version < 0:
                msg = f"state_at({stream_id!r}): version must be an int >= 0, got {version!r}"
                raise ValueError(msg)
            head = await self.store.stream_version(stream_id)
            if version > head:
                raise VersionNotReachedError(decider.name, stream_id, version, head)
        assert version is not None
        return await state_at(self.store, Rehydration(decider, self._codec, stream_id), version)

    # -- reading the log as domain events --------------------------------------------------------

    async def subscribe(
        self,
        from_position: int = 1,
        *,
        event_types: Iterable[type] | None = None,
        aggregates: Iterable[Any] | None = None,
        live: bool = True,
    ) -> AsyncIterator[RecordedEvent[Any]]:
        """Yield the log's events as domain events, from ``from_position`` on, in commit order.

        A catch-up subscription (see :func:`actorsource.subscribe` for the raw records): the
        history first, then, with ``live``, every new commit as it happens (this process's
        appends wake it at once, other processes' are polled every ``poll_interval``);
        without ``live`` it stops at the head it saw when it started.

        :param event_types: only events of these classes (their stored names and aliases)
        :param aggregates: only events of these aggregates' streams (``Aggregate`` classes or
            ``Decider`` objects); their event types are decoded too
        :raises ValueError: unless at least one of ``event_types`` and ``aggregates`` is given
            (to read every event whatever its type, use :func:`actorsource.subscribe`)
        :raises CodecError: for a stored event whose type is not among those known here
        """
        classes = list(event_types) if event_types is not None else None
        deciders = [self._decider_for(a) for a in aggregates] if aggregates is not None else None
        if classes is None and deciders is None:
            msg = (
                "Runtime.subscribe needs event_types= or aggregates= (to decode what it reads); "
                "actorsource.subscribe(store) reads every event as a raw record"
            )
            raise ValueError(msg)
        records = await matching_records(
            self.store,
            self._codec,
            from_position,
            classes,
            [d.name for d in deciders] if deciders is not None else None,
            live=live,
            poll_interval=self.poll_interval,
        )
        decode = self._codec.decode_event
        token = object()
        self._subscribers[token] = from_position - 1
        try:
            async for stored in records:
                event = decode(stored.type, stored.data, where=f" at position {stored.position}")
                yield RecordedEvent.of(event, stored)
                self._subscribers[token] = stored.position
        finally:
            del self._subscribers[token]

    def _reader_positions(self) -> list[int]:
        """Where this runtime's readers stand: its live subscriptions and the projections it
        runs, durable ones too (a durable projection's stored checkpoint is the store's to
        check, but before its first one is saved only its position here holds archiving
        back). Projections that do not run here (stopped, or on standby while another member
        of a cluster holds them) are left to their stored checkpoints."""
        return [
            *self._subscribers.values(),
            *(
                status.position
                for status in self._hosting.statuses()
                if status.state not in _NOT_READING
            ),
        ]

    # -- retention -------------------------------------------------------------------------------

    async def archive(
        self,
        stream: str | None = None,
        *,
        category: str | None = None,
        archiver: Archiver,
        through_version: int | None = None,
    ) -> list[ArchivedStream]:
        """Move the events that may leave the store to ``archiver``, then remove them.

        A stream's events may leave once they are behind its latest snapshot and handled by
        every reader: every stored checkpoint (durable projections, in any process) and this
        runtime's projections and ``subscribe`` iterators. Its last event always stays. The
        archiver gets a stream's events first; then the store removes them in one
        transaction that checks all of this again. Loading uses the snapshot; a read from
        before the first kept version raises :class:`StreamArchivedError`.

        :param stream: one stream id (``"Account-42"``); default: every stream (of
            ``category``, if given)
        :param archiver: receives the events, e.g. :class:`JsonLinesArchiver`
        :param through_version: archive no further than this version (``stream=`` only)
        :return: what was archived, one entry per stream that had something to archive
        :raises StreamNotFoundError: if ``stream`` has no events
        :raises StreamDeletedError: if ``stream`` was deleted
        :raises ValueError: if ``stream``'s events cannot leave: ``through_version`` ahead of
            its latest snapshot (or none) or at its last event, or a reader not past them
        :raises StoreError: if the store cannot archive
        """
        self._check_open("archive")
        return await self._retention.archive(stream, category, archiver, through_version)

    async def delete_stream(self, stream_id: str, *, hard: bool = False) -> AppendResult:
        """Delete a stream: it ends with a tombstone and takes no new events.

        Soft (default): its events stay readable. ``hard``: its events and snapshots are
        removed; the tombstone stays, so that the id is never reused by accident. Commands to
        it (here or in any runtime on the store) then fail with :class:`StreamDeletedError`;
        projections handling :class:`StreamDeleted` get the tombstone in log order.

        :return: where the tombstone was stored
        :raises StreamNotFoundError: if the stream has no events
        :raises StreamDeletedError: if it was deleted already (a soft-deleted stream may still
            be hard-deleted)
        :raises StoreError: if the store cannot delete
        """
        self._check_open(f"delete {stream_id!r}")
        return await self._retention.delete(stream_id, hard)

    async def forget(self, subject: str) -> None:
        """Forget a subject (crypto-shredding): destroy its key, so that its personal fields
        read as :data:`FORGOTTEN` in every event that holds them, wherever they are.

        The snapshots of the streams that hold its data are deleted (they held it in clear),
        and those streams' idle actors here are passivated (they reload without it). Forgetting
        a forgotten subject changes nothing. Then :class:`SubjectForgotten` is appended to the
        stream ``$forgotten-{subject}``, for projections to clean their read models. See the
        personal data page for what it cannot reach (read models you built, other processes'
        memory).

        :param subject: the subject's id, as stored in the events' subject field
        :raises ValueError: if ``subject`` is not a non-empty str
        :raises UnknownSubjectError: if the store has no key for it (nothing changed)
        :raises StoreError: if the store keeps no subject keys, or fails
        """
        self._check_open(f"forget subject {subject!r}")
        for stream_id in await self._shredder.forget(subject, self.store):
            self._dispatcher.passivate_stream(stream_id)

    def _check_open(self, what: str) -> None:
        if self._state is not RuntimeState.OPEN:
            msg = f"cannot {what}: the runtime is {self._state.value} (use it inside async with)"
            raise RuntimeClosedError(msg)
