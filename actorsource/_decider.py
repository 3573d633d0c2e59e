"""The pure heart of an aggregate: a Decider (``initial_state``, ``decide``, ``evolve``).

No I/O and no event loop here: a Decider is three plain functions plus a little configuration,
testable without a runtime. The class form (:class:`actorsource.Aggregate`) compiles to one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from ._errors import DefinitionError, InvalidEventError

C = TypeVar("C")
E = TypeVar("E")
S = TypeVar("S")

_NOT_GIVEN: Any = object()


class Decider(Generic[C, E, S]):
    """An aggregate as three pure functions, for users who prefer functions to classes.

    :param name: the stream category; stream ids are ``f"{name}-{aggregate_id}"``
    :param initial_state: the state of an aggregate with no events; treat it as immutable
    :param decide: ``decide(command, state)`` returns one event, a list of events, or ``None``;
        it raises (for example :class:`Rejected`) to refuse the command
    :param evolve: ``evolve(state, event)`` returns the state after the event
    :param event_types: every event class ``decide`` may return (needed to decode stored events)
    :param initial_state_factory: instead of ``initial_state``, a function returning a fresh
        initial state (for mutable states)
    :param snapshot_every: snapshot interval for this aggregate (overrides the runtime's)
    :param snapshot_version: schema version of the state; snapshots of another version are ignored
    :param state_type: the state's type, for decoding snapshots (default: the initial state's type)
    """

    __slots__ = (
        "_initial_factory",
        "decide",
        "event_types",
        "evolve",
        "name",
        "snapshot_every",
        "snapshot_version",
        "state_type",
    )

    def __init__(
        self,
        *,
        name: str,
        decide: Callable[[C, S], E | Sequence[E] | None],
        evolve: Callable[[S, E], S],
        event_types: Iterable[type[E]],
        initial_state: S = _NOT_GIVEN,
        initial_state_factory: Callable[[], S] | None = None,
        snapshot_every: int | None = None,
        snapshot_version: int = 1,
        state_type: type[S] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            msg = f"a Decider needs a non-empty str name (its stream category), got {name!r}"
            raise DefinitionError(msg)
        if (initial_state is _NOT_GIVEN) == (initial_state_factory is None):
            msg = f"Decider {name!r}: give exactly one of initial_state and initial_state_factory"
            raise DefinitionError(msg)
        if snapshot_every is not None and snapshot_every < 1:
            msg = f"Decider {name!r}: snapshot_every must be >= 1 or None, got {snapshot_every}"
            raise DefinitionError(msg)
        types = tuple(event_types)
        for event_type in types:
            if not isinstance(event_type, type):
                msg = f"Decider {name!r}: event_types must be classes, got {event_type!r}"
                raise DefinitionError(msg)
        if initial_state_factory is None:
            value = initial_state

            def initial_state_factory() -> S:
                return value

        self.name = name
        self.decide = decide
        self.evolve = evolve
        self.event_types = types
        self._initial_factory = initial_state_factory
        self.snapshot_every = snapshot_every
        self.snapshot_version = snapshot_version
        self.state_type: type[S] = (
            state_type if state_type is not None else type(initial_state_factory())
        )

    @property
    def initial_state(self) -> S:
        """The state of an aggregate that has no events yet (fresh for mutable states)."""
        return self._initial_factory()

    def decide_events(self, command: C, state: S) -> list[E]:
        """Run ``decide`` and return its events as a checked list.

        :raises InvalidEventError: if ``decide`` returned something that is not one of
            ``event_types``
        """
        returned: Any = self.decide(command, state)
        if returned is None:
            return []
        events: list[E] = list(returned) if isinstance(returned, (list, tuple)) else [returned]
        for event in events:
            if not isinstance(event, self.event_types):
                known = ", ".join(t.__name__ for t in self.event_types) or "none"
                reason = (
                    f"{type(event).__name__} is not an event type of {self.name} "
                    f"(its event types: {known})"
                )
                raise InvalidEventError(self.name, type(command).__name__, returned, reason)
        return events

    def fold(self, events: Iterable[E], state: S = _NOT_GIVEN) -> S:
        """Return the state after ``events``, starting from ``state`` (default: initial)."""
        current = self.initial_state if state is _NOT_GIVEN else state
        evolve = self.evolve
        for event in events:
            current = evolve(current, event)
        return current

    def __repr__(self) -> str:
        return f"<Decider {self.name!r}>"
