"""The read side of the test kit: given these events, then this read model.

A projection's handlers are run as the runtime runs them (the same delivery code: decoding,
dispatch by event type, the :class:`~actorsource.ProjectionContext`, the event as the cause of
the commands a handler sends, a failure as a :class:`~actorsource.ProjectionError`), on events
that went through the codec and JSON text as on their way to a store and back; no store, no
runtime, and no event loop for plain handlers. Re-exported by :mod:`actorsource.testing`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from ._codec import Codec
from ._errors import NaiveDatetimeError, ProjectionError
from ._projection import Projection, ProjectionRunner, compile_projection
from ._records import JSONDict, NewEvent, StoredEvent
from .stores._base import decode_json, encode_json
from .stores.memory import InMemoryEventStore

P = TypeVar("P", bound=Projection)
X = TypeVar("X", bound=BaseException)

#: when the first given event was recorded, unless told otherwise (each next one a second later)
DEFAULT_START: datetime = datetime(2024, 1, 1, tzinfo=UTC)

_NOT_GIVEN: Any = object()


def given_events(
    *events: object,
    stream_id: str = "Test-1",
    metadata: JSONDict | None = None,
    start: datetime = DEFAULT_START,
) -> GivenEvents:
    """Start a read-side scenario: the log holds ``events``, in this order.

    Each event is stored and read back as a store would (codec, then JSON text). It is an
    event object (in the stream ``stream_id``) or a ``(stream_id, event)`` pair::

        given_events(Deposited(10), Withdrew(3), stream_id="Account-a")
        given_events(("Account-a", Deposited(10)), ("Account-b", Deposited(1)))

    The events take versions per stream from 1, positions from 1, ids derived from their
    positions, and commit times a second apart from ``start``: a test sees the same records
    every run.

    :param stream_id: the stream of events given without one
    :param metadata: every event's metadata (default: none)
    :param start: the commit time of the first event (timezone-aware)
    :return: the scenario, to go on with :meth:`GivenEvents.project`
    :raises AssertionError: if an event cannot be stored and read back as it was
    :raises CodecError: if an event cannot be encoded (a value JSON cannot hold)
    :raises DefinitionError: if an event class has a field the codec cannot store
    :raises NaiveDatetimeError: if ``start`` has no time zone
    """
    __tracebackhide__ = True
    if start.tzinfo is None:
        raise NaiveDatetimeError("start", start, where="given_events: ")
    codec = Codec()
    pairs = [_pair(item, stream_id) for item in events]
    codec.register_events({type(event) for _, event in pairs})
    versions: dict[str, int] = {}
    stored: list[StoredEvent] = []
    for position, (stream, event) in enumerate(pairs, start=1):
        versions[stream] = version = versions.get(stream, 0) + 1
        type_name, data = codec.encode_event(event)
        event_id = str(uuid.UUID(int=position))
        label = f"given event [{position - 1}]"
        text = encode_json(data, "data", NewEvent(event_id, type_name, data, {}))
        read_back = decode_json(text)
        same = (
            type(event).__eq__ is object.__eq__ or codec.decode_event(type_name, read_back) == event
        )
        if not same:
            msg = f"{label} {event!r} does not read back from the store as it was"
            raise AssertionError(msg)
        stored.append(
            StoredEvent(
                stream_id=stream,
                version=version,
                position=position,
                type=type_name,
                data=read_back,
                metadata=dict(metadata or {}),
                event_id=event_id,
                recorded_at=start + timedelta(seconds=position - 1),
            )
        )
    return GivenEvents(tuple(stored))


def _pair(item: object, stream_id: str) -> tuple[str, object]:
    if isinstance(item, tuple):
        if len(item) != 2 or not isinstance(item[0], str) or not item[0]:
            msg = f"a given event is an event or a (stream_id, event) pair, got the tuple {item!r}"
            raise TypeError(msg)
        return item[0], item[1]
    return stream_id, item


class GivenEvents:
    """A log of events, before a projection reads it (made by :func:`given_events`)."""

    __slots__ = ("_stored",)

    def __init__(self, stored: tuple[StoredEvent, ...]) -> None:
        self._stored = stored

    def __repr__(self) -> str:
        return f"<GivenEvents: {len(self._stored)} events>"

    @property
    def records(self) -> tuple[StoredEvent, ...]:
        """The events as a store would hold them (streams, versions, positions, data)."""
        return self._stored

    def project(
        self, projection: P, *, runtime: Any = None, transaction: Any = None
    ) -> Projected[P]:
        """Run ``projection``'s handlers on the events, in order, as the runtime would.

        Events of types it does not handle pass it by. A handler that raises stops it there
        (the runtime would retry that event); :meth:`Projected.raises` checks that failure.

        :param projection: a fresh instance (its read model empty)
        :param runtime: what handlers get as ``ctx.runtime`` (e.g. an open runtime from
            :func:`~actorsource.testing.runtime`); by default a stand-in that fails the test
            when a handler uses it
        :param transaction: what handlers get as ``ctx.transaction`` (the in-memory store
            gives ``None``)
        :return: the outcome, to check with :meth:`Projected.then` or :meth:`Projected.raises`
        :raises TypeError: if the projection has an async handler (use :meth:`project_async`)
        """
        runner = self._runner(projection, runtime)
        asynchronous = [
            handler.function.__name__
            for handler in runner.compiled.handlers.values()
            if handler.is_async
        ]
        if asynchronous:
            msg = (
                f"{type(projection).__qualname__} has async handlers "
                f"({', '.join(asynchronous)}): use 'await given_events(...).project_async(...)'"
            )
            raise TypeError(msg)
        try:
            for stored in self._delivered(runner):
                runner._call(stored, transaction)
        except ProjectionError as exc:
            return Projected(projection, exc)
        return Projected(projection, None)

    async def project_async(
        self, projection: P, *, runtime: Any = None, transaction: Any = None
    ) -> Projected[P]:
        """:meth:`project` for projections with async handlers (awaited one at a time)."""
        runner = self._runner(projection, runtime)
        try:
            for stored in self._delivered(runner):
                result = runner._call(stored, transaction)
                if result is not None:
                    await result
        except ProjectionError as exc:
            return Projected(projection, exc)
        return Projected(projection, None)

    def _runner(self, projection: Projection, runtime: Any) -> ProjectionRunner:
        runner = ProjectionRunner(
            projection,
            name=compile_projection(type(projection)).name,
            store=InMemoryEventStore(),  # never opened: the events are handed over directly
            codec=Codec(),
            runtime=_NoRuntime() if runtime is None else runtime,
            batch_size=1,
            poll_interval=1.0,
            max_backoff=1.0,
        )
        return runner

    def _delivered(self, runner: ProjectionRunner) -> list[StoredEvent]:
        # what the store's type filter would give the projection
        wanted = set(runner.type_names)
        return [stored for stored in self._stored if stored.type in wanted]


class _NoRuntime:
    """What a handler gets as ``ctx.runtime`` when the test gave none."""

    def __getattr__(self, name: str) -> Any:
        msg = (
            f"a handler used ctx.runtime.{name}, but the scenario has no runtime: pass one, "
            "e.g. .project(projection, runtime=runtime)"
        )
        raise AssertionError(msg)


class Projected(Generic[P]):
    """The outcome of a projection on a :class:`GivenEvents` (made by
    :meth:`GivenEvents.project`)."""

    __slots__ = ("_error", "projection")

    def __init__(self, projection: P, error: ProjectionError | None) -> None:
        #: the projection instance, its read model built from the events
        self.projection = projection
        self._error = error

    def __repr__(self) -> str:
        outcome = "ok" if self._error is None else f"failed: {self._error}"
        return f"<Projected {type(self.projection).__qualname__} {outcome}>"

    def then(self, check: Callable[[P], Any], expected: Any = _NOT_GIVEN) -> Projected[P]:
        """Check the read model.

        ``then(read, expected)`` compares ``read(projection)`` with ``expected`` (``==``);
        ``then(predicate)`` checks that ``predicate(projection)`` is true::

            .then(lambda balances: balances.by_account, {"Account-a": 7})
            .then(lambda balances: "Account-b" not in balances.by_account)

        :return: this outcome, to check more
        :raises AssertionError: if a handler raised, or the check fails (with what it found)
        """
        __tracebackhide__ = True
        if self._error is not None:
            msg = (
                f"cannot check the read model: {self._error}\n(check a failure with "
                ".raises(ProjectionError))"
            )
            raise AssertionError(msg) from self._error
        name = getattr(check, "__qualname__", repr(check))
        found = check(self.projection)
        if expected is _NOT_GIVEN:
            if not found:
                msg = (
                    f"the read model does not satisfy {name} (it returned {found!r}):\n"
                    f"  {_describe(self.projection)}"
                )
                raise AssertionError(msg)
        elif found != expected:
            msg = (
                f"the read model is not the expected one ({name}):\n"
                f"  expected: {expected!r}\n  actual:   {found!r}"
            )
            raise AssertionError(msg)
        return self

    def raises(self, expected: type[X], *, match: str | None = None) -> X:
        """Check that a handler raised; return the error: the :class:`ProjectionError` naming
        the event (``expected=ProjectionError``), or the handler's own exception (its cause).

        :param match: a regular expression that ``re.search`` must find in the message
        :raises AssertionError: if no handler raised, or something else, or ``match`` fails
        """
        __tracebackhide__ = True
        error = self._error
        if error is None:
            msg = f"a handler of {type(self.projection).__qualname__} was expected to raise"
            raise AssertionError(msg)
        found: BaseException = error
        if not isinstance(found, expected) and error.__cause__ is not None:
            found = error.__cause__
        if not isinstance(found, expected):
            msg = f"expected {expected.__name__}, but {error}"
            raise AssertionError(msg) from error
        if match is not None and re.search(match, str(found)) is None:
            msg = f"{type(found).__name__} {str(found)!r} does not match {match!r}"
            raise AssertionError(msg) from error
        return found


def _describe(projection: object) -> str:
    fields = getattr(projection, "__dict__", None)
    return f"{type(projection).__qualname__} {fields!r}" if fields else repr(projection)
