"""The pure heart of an aggregate: a Decider (``initial_state``, ``decide``, ``evolve``).

No I/O and no event loop here: a Decider is three plain functions plus a little configuration,
testable without a runtime. The class form (:class:`actorsource.Aggregate`) compiles to one.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from ._errors import DefinitionError, InvalidEventError
from ._timers import Cancel, Decided, Schedule

C = TypeVar("C")
E = TypeVar("E")
S = TypeVar("S")

_NOT_GIVEN: Any = object()

#: turns the stored data of one schema version into the data of the next (``{v: f}``: ``f``
#: takes version ``v`` and returns version ``v + 1``)
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def checked_version(owner: str, what: str, version: object) -> int:
    """Return ``version`` if it is a usable schema version (an int >= 1).

    :param owner: names the definition in the message ("event type Deposited", ...)
    :param what: names the setting in the message ("version", "snapshot_version")
    :raises DefinitionError: if it is not an int >= 1
    """
    if type(version) is not int or version < 1:
        msg = f"{owner}: {what} must be an int >= 1, got {version!r}"
        raise DefinitionError(msg)
    return version


def checked_category(owner: str, category: object) -> str:
    """Return ``category`` if it can be a stream category, else raise a DefinitionError.

    A stream id is ``f"{category}-{aggregate_id}"`` and a category is read back as the part
    before its first ``-``: with a ``-`` in the category, two aggregate types could share a
    stream (``Other-x`` with id ``1`` and ``Other`` with id ``x-1``). The stores hold valid
    Unicode only, and PostgreSQL's text no NUL.

    :param owner: names the definition in the message ("Decider 'Account'", "Account")
    :raises DefinitionError: if it is not a non-empty str, holds ``-`` or NUL, or is not
        valid Unicode
    """
    if not isinstance(category, str) or not category:
        msg = f"{owner}: the stream category must be a non-empty str, got {category!r}"
        raise DefinitionError(msg)
    if "-" in category:
        msg = (
            f"{owner}: the stream category {category!r} holds '-', which separates the category "
            "from the aggregate id in a stream id (two aggregate types could then share a "
            f"stream); choose one without it, e.g. {category.replace('-', '')!r}"
        )
        raise DefinitionError(msg)
    if "\x00" in category or not _is_utf8(category):
        msg = (
            f"{owner}: the stream category {category!r} must be valid Unicode (no lone "
            "surrogates) without NUL characters, which the stores cannot hold"
        )
        raise DefinitionError(msg)
    return category


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def checked_upcasters(
    owner: str,
    what: str,
    upcasters: Mapping[int, Callable[[Any], Any]] | None,
    version: int,
    *,
    complete: bool,
) -> Mapping[int, Callable[[Any], Any]]:
    """Return a read-only copy of ``upcasters`` after checking them against ``version``.

    The upcaster at key ``v`` turns data of schema version ``v`` into version ``v + 1``, so the
    keys of a definition at ``version`` run from 1 to ``version - 1``.

    :param owner: names the definition in messages ("event type Deposited", ...)
    :param what: names the setting in messages ("upcasters", "snapshot_upcasters")
    :param complete: whether every step from 1 to ``version - 1`` needs an upcaster
    :raises DefinitionError: if it is not a mapping, a key is not an int in that range, a value
        is not callable, or (``complete``) a step has no upcaster
    """
    if upcasters is None:
        upcasters = {}
    if not isinstance(upcasters, Mapping):
        msg = (
            f"{owner}: {what} must be a mapping from schema version to upcaster function, "
            f"got {type(upcasters).__name__}"
        )
        raise DefinitionError(msg)
    if version == 1:
        keys = "there is nothing to upcast"
    elif version == 2:
        keys = "the only key is 1"
    else:
        keys = f"the keys run from 1 to {version - 1}"
    rule = "the upcaster at key v turns version-v data into version v+1"
    for key, upcaster in upcasters.items():
        if type(key) is not int or not 1 <= key < version:
            msg = f"{owner}: {what} has a key {key!r}, but at version {version} {keys} ({rule})"
            raise DefinitionError(msg)
        if not callable(upcaster):
            msg = f"{owner}: the {what} entry for version {key} is not callable: {upcaster!r}"
            raise DefinitionError(msg)
    if complete:
        missing = [step for step in range(1, version) if step not in upcasters]
        if missing:
            listed = ", ".join(map(str, missing))
            plural = "s" if len(missing) > 1 else ""
            msg = (
                f"{owner} is at version {version} but {what} has no upcaster for "
                f"version{plural} {listed}: data stored at every older version must stay "
                f"readable, so {keys} ({rule})"
            )
            raise DefinitionError(msg)
    return types.MappingProxyType(dict(sorted(upcasters.items())))


class Decider(Generic[C, E, S]):
    """An aggregate as three pure functions, for users who prefer functions to classes.

    :param name: the stream category; stream ids are ``f"{name}-{aggregate_id}"`` (so it
        cannot hold ``-``)
    :param initial_state: the state of an aggregate with no events; treat it as immutable
    :param decide: ``decide(command, state)`` returns one event, a list of events, or ``None``;
        it raises (for example :class:`Rejected`) to refuse the command
    :param evolve: ``evolve(state, event)`` returns the state after the event
    :param event_types: every event class ``decide`` may return (needed to decode stored events)
    :param initial_state_factory: instead of ``initial_state``, a function returning a fresh
        initial state (for mutable states)
    :param snapshot_every: snapshot interval for this aggregate (overrides the runtime's)
    :param snapshot_version: schema version of the state (an int >= 1); a snapshot of an older
        version is upcast with ``snapshot_upcasters`` if they cover every step to this version,
        and otherwise ignored (the state is rebuilt from the events), as is a newer one
    :param snapshot_upcasters: ``{v: f}``: ``f`` takes the JSON form of a version-``v`` state (a
        dict for an attrs state) and returns the JSON form of version ``v + 1``; keys run from 1
        to ``snapshot_version - 1``, and may leave steps out
    :param state_type: the state's type, for decoding snapshots (default: the initial state's type)
    :param command_types: the command classes ``decide`` handles; needed only to deliver
        commands that timers scheduled to this aggregate (:class:`Schedule`)
    :raises DefinitionError: if a setting is malformed
    """

    __slots__ = (
        "_initial_factory",
        "command_types",
        "decide",
        "event_types",
        "evolve",
        "name",
        "snapshot_every",
        "snapshot_upcasters",
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
        snapshot_upcasters: Mapping[int, Callable[[Any], Any]] | None = None,
        state_type: type[S] | None = None,
        command_types: Iterable[type] = (),
    ) -> None:
        if not isinstance(name, str) or not name:
            msg = f"a Decider needs a non-empty str name (its stream category), got {name!r}"
            raise DefinitionError(msg)
        checked_category(f"Decider {name!r}", name)
        if (initial_state is _NOT_GIVEN) == (initial_state_factory is None):
            msg = f"Decider {name!r}: give exactly one of initial_state and initial_state_factory"
            raise DefinitionError(msg)
        if snapshot_every is not None and snapshot_every < 1:
            msg = f"Decider {name!r}: snapshot_every must be >= 1 or None, got {snapshot_every}"
            raise DefinitionError(msg)
        owner = f"Decider {name!r}"
        checked_version(owner, "snapshot_version", snapshot_version)
        upcasters = checked_upcasters(
            owner, "snapshot_upcasters", snapshot_upcasters, snapshot_version, complete=False
        )
        event_classes = tuple(event_types)
        for event_type in event_classes:
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
        self.event_types = event_classes
        self._initial_factory = initial_state_factory
        self.snapshot_every = snapshot_every
        self.snapshot_version = snapshot_version
        self.snapshot_upcasters = upcasters
        command_classes = tuple(command_types)
        for command_type in command_classes:
            if not isinstance(command_type, type):
                msg = f"Decider {name!r}: command_types must be classes, got {command_type!r}"
                raise DefinitionError(msg)
        #: the command classes it handles (for decoding the commands timers deliver)
        self.command_types = command_classes
        self.state_type: type[S] = (
            state_type if state_type is not None else type(initial_state_factory())
        )

    @property
    def initial_state(self) -> S:
        """The state of an aggregate that has no events yet (fresh for mutable states)."""
        return self._initial_factory()

    def decide_events(self, command: C, state: S) -> list[E]:
        """Run ``decide`` and return its events as a checked list.

        A handler that returned effects (:class:`Schedule`, :class:`Cancel`) beside its events
        gets a :class:`Decided` list, which carries them; any other gets a plain list.

        :raises InvalidEventError: if ``decide`` returned something that is neither one of
            ``event_types`` nor an effect
        """
        returned: Any = self.decide(command, state)
        if returned is None:
            return []
        events: list[E] = list(returned) if isinstance(returned, (list, tuple)) else [returned]
        for event in events:
            if not isinstance(event, self.event_types):
                # effects are found here, on the path a wrong return takes: a handler that
                # returns only events pays nothing for them
                return self._with_effects(command, returned, events)
        return events

    def _with_effects(self, command: object, returned: object, items: list[Any]) -> list[E]:
        events: list[E] = []
        effects: list[Schedule | Cancel] = []
        for item in items:
            if isinstance(item, self.event_types):
                events.append(item)
            elif isinstance(item, (Schedule, Cancel)):
                effects.append(item)
            else:
                known = ", ".join(t.__name__ for t in self.event_types) or "none"
                reason = (
                    f"{type(item).__name__} is not an event type of {self.name} "
                    f"(its event types: {known}) nor an effect (Schedule, Cancel)"
                )
                raise InvalidEventError(self.name, type(command).__name__, returned, reason)
        return Decided(events, effects)

    def fold(self, events: Iterable[E], state: S = _NOT_GIVEN) -> S:
        """Return the state after ``events``, starting from ``state`` (default: initial)."""
        current = self.initial_state if state is _NOT_GIVEN else state
        evolve = self.evolve
        for event in events:
            current = evolve(current, event)
        return current

    def __repr__(self) -> str:
        return f"<Decider {self.name!r}>"
