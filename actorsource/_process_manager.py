"""Process managers: aggregates whose commands are inputs (events, outcomes) and whose decisions
include commands to send, recorded in their own stream before they are sent.

A process manager instance is an ordinary aggregate: the runtime gives it a mailbox, loads it
from its stream and appends what it decides. What is particular is kept here: the ``Send``
effect becomes a ``CommandDecided`` event (the outbox), an outcome becomes ``OutcomeReceived``,
and each handled event leaves ``EventHandled`` (so a replayed event is recognised). Sending is
the router's job (``_process_router``).
"""

import functools
import inspect
import logging
import typing
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from ._aggregate import Aggregate, _handlers, apply, command, decider_of
from ._codec import Codec
from ._decider import Decider
from ._errors import DefinitionError, Rejected

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger("actorsource.processes")

_EVENT_MARK = "__actorsource_process_event__"
_OUTCOME_MARK = "__actorsource_process_outcome__"
_WRAPPED_MARK = "__actorsource_process_sends__"

#: encodes the commands an instance decides into its events (commands have no upcasters)
_COMMANDS = Codec()


@attrs.frozen
class Send:
    """An effect a process manager's handler returns: send ``command`` to the aggregate ``to``.

    ``to`` names the target as ``runtime.ref`` does: ``(Order, "42")`` (an ``Aggregate`` class or
    a ``Decider``, and an id). The command is recorded in the instance's stream (a
    ``CommandDecided`` event) with the events decided beside it, and sent after the append.
    """

    command: object
    to: tuple[Any, str]

    def __attrs_post_init__(self) -> None:
        to = self.to
        if not (isinstance(to, tuple) and len(to) == 2 and isinstance(to[1], str) and to[1]):
            msg = (
                f"Send(to=...) takes (an Aggregate class or a Decider, a non-empty id), got {to!r}"
            )
            raise ValueError(msg)


@attrs.frozen
class Outcome:
    """What became of a command a process manager sent: the input of its ``@on_outcome``
    handler.

    ``reason`` is ``None`` if the target accepted the command, else the message of the
    ``Rejected`` it raised.
    """

    #: the command that was sent
    command: object
    #: the target's stream id
    to: str
    #: why the target refused it (``None``: it was done)
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the target accepted the command."""
        return self.reason is None


# -- the events a process manager's stream holds beside its own


@attrs.frozen
class EventHandled:
    """An instance handled the event at ``position`` of the log (of type ``type``)."""

    position: int
    type: str


@attrs.frozen
class CommandDecided:
    """An instance decided to send a command: the outbox entry ``seq``."""

    seq: int
    target: str
    command_type: str
    data: dict[str, Any]


@attrs.frozen
class OutcomeReceived:
    """The outcome of the outbox entry ``seq`` came back (``reason``: why it was refused)."""

    seq: int
    reason: str | None = None


# -- the inputs the router gives an instance (in memory only: never stored)


@attrs.frozen
class HandleEvent:
    event: object
    position: int
    type: str


@attrs.frozen
class RecordOutcome:
    seq: int
    outcome: Outcome


def on_event(*, key: Callable[[Any], str | None]) -> Callable[[F], F]:
    """Mark a process manager's method as the handler of the event type its argument is
    annotated with, wherever in the log such an event is stored.

    :param key: returns the id of the instance the event belongs to (its correlation key), or
        ``None`` to ignore the event
    """
    if not callable(key):
        msg = f"on_event(key=...) takes a function of the event, got {key!r}"
        raise TypeError(msg)

    def mark(method: F) -> F:
        setattr(method, _EVENT_MARK, key)
        return method

    return mark


def on_outcome(method: F) -> F:
    """Mark a process manager's method as the handler of the outcomes of the command type its
    argument's ``Outcome`` is about: ``def paid(self, outcome: Outcome, command: ChargePayment)``.
    """
    setattr(method, _OUTCOME_MARK, True)
    return method


@attrs.define
class ProcessManager(Aggregate):
    """Base class of process managers (sagas): attrs classes whose fields are the state.

    Mark the handlers of events from the log with :func:`on_event` (its ``key`` correlates an
    event to an instance), of the outcomes of sent commands with :func:`on_outcome`, and of
    commands (timeouts scheduled with ``Schedule``) with ``@command``; change the state with
    ``@apply``. Handlers return events, ``Send`` and timer effects.
    """

    #: the log position of the last event this instance handled
    handled_through: int = 0
    #: the number of the next command it decides
    next_seq: int = 1
    #: the commands decided whose outcome has not come back, by number
    outbox: dict[int, CommandDecided] = attrs.field(factory=dict)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, member in list(vars(cls).items()):
            marked = callable(member) and getattr(member, "__actorsource_command__", False)
            if marked and not getattr(member, _WRAPPED_MARK, False):
                setattr(cls, name, _recording_sends(member))

    @command
    def _handle_event(self, cmd: HandleEvent) -> list[object]:
        if cmd.position <= self.handled_through:
            return []  # a replay of an event this instance handled
        handler = _tables(type(self))[0].get(type(cmd.event))
        result = handler(self, cmd.event) if handler is not None else None
        return [*self.recorded(result), EventHandled(cmd.position, cmd.type)]

    @command
    def _record_outcome(self, cmd: RecordOutcome) -> list[object]:
        if cmd.seq not in self.outbox:
            return []  # its outcome is recorded already
        command_type = type(cmd.outcome.command)
        handler = _tables(type(self))[1].get(command_type)
        received = OutcomeReceived(cmd.seq, cmd.outcome.reason)
        try:
            result = handler(self, cmd.outcome, cmd.outcome.command) if handler else None
        except Rejected as exc:
            # the handler's input is skipped, as an event's is; the outcome is still recorded,
            # or the command would be sent again and again
            logger.info(
                "%s refused the outcome of its %s to %s: %s",
                type(self).__name__,
                command_type.__name__,
                cmd.outcome.to,
                exc,
            )
            return [received]
        return [received, *self.recorded(result)]

    @apply
    def _event_handled(self, event: EventHandled) -> None:
        self.handled_through = event.position

    @apply
    def _command_decided(self, event: CommandDecided) -> None:
        self.outbox[event.seq] = event
        self.next_seq = event.seq + 1

    @apply
    def _outcome_received(self, event: OutcomeReceived) -> None:
        self.outbox.pop(event.seq, None)

    def recorded(self, result: object) -> list[object]:
        """Return a handler's result with each ``Send`` turned into its ``CommandDecided``."""
        if result is None:
            return []
        items = list(result) if isinstance(result, list | tuple) else [result]
        seq = self.next_seq
        out: list[object] = []
        for item in items:
            if isinstance(item, Send):
                out.append(_decided(seq, item))
                seq += 1
            else:
                out.append(item)
        return out


def _decided(seq: int, send: Send) -> CommandDecided:
    aggregate, aggregate_id = send.to
    decider = aggregate if isinstance(aggregate, Decider) else decider_of(aggregate)
    if not isinstance(send.command, decider.command_types):
        handled = ", ".join(t.__name__ for t in decider.command_types) or "none declared"
        msg = (
            f"Send({type(send.command).__name__}) to {decider.name}-{aggregate_id}: its "
            f"aggregate does not handle that command (its commands: {handled})"
        )
        raise DefinitionError(msg)
    type_name, data = _COMMANDS.encode_command(send.command)
    return CommandDecided(seq, f"{decider.name}-{aggregate_id}", type_name, data)


def _recording_sends(method: F) -> F:
    @functools.wraps(method)
    def wrapper(self: ProcessManager, cmd: Any) -> list[object]:
        return self.recorded(method(self, cmd))

    setattr(wrapper, _WRAPPED_MARK, True)
    return wrapper  # type: ignore[return-value]


_compiled: weakref.WeakKeyDictionary[type, tuple[dict[type, Any], dict[type, Any], dict[type, Any]]]
_compiled = weakref.WeakKeyDictionary()


def _tables(cls: type) -> tuple[dict[type, Any], dict[type, Any], dict[type, Any]]:
    """Return the event handlers, outcome handlers (by command type) and keys (by event type)
    of a process manager class (built once, then cached)."""
    found = _compiled.get(cls)
    if found is None:
        events = _handlers(cls, _EVENT_MARK, "@on_event")
        keys = {kind: getattr(method, _EVENT_MARK) for kind, method in events.items()}
        outcomes = _outcome_handlers(cls)
        found = (events, outcomes, keys)
        _compiled[cls] = found
    return found


def _outcome_handlers(cls: type) -> dict[type, Any]:
    table: dict[type, Any] = {}
    for klass in reversed(cls.__mro__):
        for attr, member in vars(klass).items():
            if not (callable(member) and getattr(member, _OUTCOME_MARK, False)):
                continue
            where = f"{cls.__qualname__}.{attr}"
            params = list(inspect.signature(member).parameters)
            hints = typing.get_type_hints(member)
            if len(params) != 3 or params[2] not in hints:
                msg = (
                    f"@on_outcome method {where} must take (self, outcome: Outcome, command: "
                    "TheCommandType), the command annotated with the type it handles"
                )
                raise DefinitionError(msg)
            annotation = hints[params[2]]
            kinds = typing.get_args(annotation) or (annotation,)
            for kind in kinds:
                table[kind] = member
    return table


def event_keys(cls: type[ProcessManager]) -> dict[type, Callable[[Any], str | None]]:
    """Return the event types a process manager handles, each with its correlation key."""
    decider_of(cls)  # a malformed class fails here, naming what is wrong
    return dict(_tables(cls)[2])
