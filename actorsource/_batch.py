"""Deciding a batch of commands and replying to its callers.

Per batch: decide each command against the evolving state, encode and apply the new events
("validate before storing"), then, once the store answered, reply to each caller with its
recorded events or its error. Replies wait for the commit, since every decision in the batch
rests on the events before it.
"""

from __future__ import annotations

import logging
from typing import Any, Final, Protocol

from ._codec import Codec
from ._context import Counters
from ._decider import Decider
from ._errors import ActorFailedError, CodecError, ConcurrencyError, EventApplyError, Rejected
from ._ids import new_event_id
from ._messages import Command
from ._metrics import COMMANDS, EVENTS_APPENDED, STREAM_LENGTH, Metrics
from ._personal import PersonalSpec
from ._records import AppendResult, JSONDict, NewEvent, RecordedEvent
from ._timer_effects import encode_effects
from ._timers import Clock, Decided, TimerChange
from ._tracing import CAUSATION_ID, COMMAND_ID, CORRELATION_ID
from .stores._base import decode_json, encode_json

logger = logging.getLogger("actorsource.actor")


class BatchContext(Protocol):
    """What deciding and replying use of the actors' shared context."""

    codec: Codec
    counters: Counters
    metrics: Metrics | None
    spare_outcomes: list[BatchOutcome]
    clock: Clock


class BatchActor(Protocol):
    """What deciding and replying use of an actor."""

    stream_id: str
    decider: Decider[Any, Any, Any]
    state: Any
    version: int

    @property
    def context(self) -> BatchContext: ...

    def earlier(self, command_id: str, known: Known | None, outcome: BatchOutcome) -> Any: ...

    def remember(self, command_id: str, recorded: list[RecordedEvent[Any]]) -> None: ...


def decide_batch(actor: BatchActor, batch: list[Command], known: Known | None) -> BatchOutcome:
    decider = actor.decider
    encode = actor.context.codec.encode_event
    inexact = actor.context.codec.inexact
    personal = actor.context.codec.personal
    spare = actor.context.spare_outcomes
    outcome = spare.pop() if spare else BatchOutcome()
    # a new list each batch: the store may keep the one it is given
    outcome.new_events = []
    for index, message in enumerate(batch):
        command_id = message.command_id
        if command_id is not None:
            earlier = actor.earlier(command_id, known, outcome)
            if earlier is not None:
                outcome.results.append(earlier)
                continue
        if message.expected_version is not None:
            refusal = precondition_refusal(actor, message.expected_version, outcome)
            if refusal is not None:
                outcome.results.append(refusal)
                continue
        try:
            events = decider.decide_events(message.command, actor.state)
        except Exception as exc:  # Rejected and any handler error: reply, go on
            if isinstance(exc, Rejected) and exc.stream_id is None:
                exc.stream_id = actor.stream_id  # whoever shows the refusal can name the aggregate
            outcome.results.append(exc)
            continue
        if type(events) is not list:  # the handler returned timer effects too (Decided)
            try:
                take_effects(actor, outcome, index, events)  # type: ignore[arg-type]
            except Exception as exc:  # a command that cannot be scheduled: reply, go on
                outcome.results.append(exc)
                continue
        if not events:
            outcome.results.append(())
            continue
        new_events = outcome.new_events
        kept = len(new_events)
        current_type = ""
        try:
            for event in events:
                type_name, data = encode(event)
                if personal and type(event) in personal:  # only where such classes exist
                    seal(actor, outcome, personal[type(event)], type_name, data)
                new_events.append(NewEvent(new_event_id(), type_name, data, message.metadata))
            if inexact:  # only in runtimes with event classes that may not read back as is
                for event in events:
                    if type(event) in inexact:
                        events = as_stored(actor, events, new_events, kept)
                        break
            state = actor.state
            for event in events:
                current_type = type(event).__name__
                state = decider.evolve(state, event)
            actor.state = state
        except Exception as exc:
            del new_events[kept:]  # this command's events are never stored
            if outcome.timers is not None and outcome.timers_from is not None:
                if outcome.timers_from[0] == index:  # nor its timers
                    del outcome.timers[outcome.timers_from[1] :]
                if not outcome.timers:
                    outcome.timers = None
            if isinstance(exc, CodecError):
                error: Exception = exc
            else:
                error = EventApplyError(actor.stream_id, current_type, exc)
                error.__cause__ = exc
            outcome.results.append(error)
            outcome.corrupted = True
            outcome.rest = batch[index + 1 :]
            break
        outcome.results.append(events)
        if command_id is not None:
            # a second message with this id in the batch gets this one's events
            if outcome.keyed is None:
                outcome.keyed = {}
            outcome.keyed[command_id] = []  # its recorded events, once replied
    return outcome


def seal(
    actor: BatchActor, outcome: BatchOutcome, spec: PersonalSpec, type_name: str, data: JSONDict
) -> None:
    """Seal an event's personal fields now if this runtime has its subjects' keys, else mark
    the batch to be sealed (keys stored first) before its append."""
    ring = actor.context.codec.keyring
    if ring.missing(spec, data, actor.stream_id, type_name):
        outcome.unsealed = True
    else:
        ring.seal(spec, data, type_name)


def precondition_refusal(
    actor: BatchActor, expected: int, outcome: BatchOutcome
) -> ConcurrencyError | None:
    """The refusal of a conditional command if the stream is not at ``expected`` now: after
    the commands decided before it in this batch (a retry after a conflict decides again
    against the reloaded stream, so such a command is refused then, never decided anew)."""
    actual = actor.version + len(outcome.new_events)
    if actual == expected:
        return None
    if actual < expected:
        # expected further than this actor has seen: it may be behind the store (another
        # process appended), so the batch is decided again after a reload before refusing
        outcome.stale = True
    return ConcurrencyError(actor.stream_id, expected, actual)


def take_effects(actor: BatchActor, outcome: BatchOutcome, index: int, decided: Decided) -> None:
    """Add the timer writes of the effects a command's handler returned to the batch's."""
    context = actor.context
    changes = encode_effects(
        context.codec, context.clock.now(), actor.decider, actor.stream_id, decided.effects
    )
    if not changes:
        return
    if outcome.timers is None:
        outcome.timers = []
    outcome.timers_from = (index, len(outcome.timers))
    outcome.timers.extend(changes)


def as_stored(
    actor: BatchActor, events: list[Any], new_events: list[NewEvent], kept: int
) -> list[Any]:
    """Return ``events`` as a load will read them back, for those of classes whose values
    may not come back as they were (a field typed ``Any`` holding a tuple comes back a list).

    Applying these, not the originals, keeps the live state the one a reload rebuilds, and
    replies with the events a reader of the store sees (validate before storing).

    :param kept: the index in ``new_events`` of the first event's encoded form
    :raises CodecError: if an event's data cannot be stored, or would not decode again
    """
    inexact = actor.context.codec.inexact
    decode = actor.context.codec.decode_event
    stored = events
    for index, event in enumerate(events):
        if type(event) not in inexact:
            continue
        if stored is events:
            stored = list(events)
        new = new_events[kept + index]
        text = encode_json(new.data, "data", new)  # as the stores write it
        try:
            stored[index] = decode(new.type, decode_json(text))
        except CodecError as exc:
            msg = (
                f"event {new.type} would be stored in a form that does not decode again, "
                f"so it was not stored: {exc}"
            )
            raise CodecError(msg, type_name=new.type) from exc
    return stored


def log_appended(actor: BatchActor, new_events: list[NewEvent], result: AppendResult) -> None:
    first_version = result.version - len(new_events) + 1
    for offset, new in enumerate(new_events):
        metadata = new.metadata
        logger.debug(
            "event appended",
            extra={
                "event_id": new.event_id,
                "event_type": new.type,
                "stream_id": actor.stream_id,
                "version": first_version + offset,
                "position": result.first_position + offset,
                "correlation_id": metadata.get(CORRELATION_ID),
                "causation_id": metadata.get(CAUSATION_ID),
                "command_id": metadata.get(COMMAND_ID),
                "recorded_at": result.recorded_at,
            },
        )


def recycle(actor: BatchActor, outcome: BatchOutcome) -> None:
    """Keep a replied batch's outcome for a next batch (nothing refers to it any more)."""
    spare = actor.context.spare_outcomes
    if len(spare) < SPARE_OUTCOMES:
        outcome.clear()
        spare.append(outcome)


def reply(actor: BatchActor, batch: list[Command], outcome: BatchOutcome, result: Any) -> None:
    counters = actor.context.counters
    new_events = outcome.new_events
    offset = 0
    for message, decided in zip(batch, outcome.results, strict=True):
        future = message.reply
        command_id = message.command_id
        counters.commands_processed += 1
        if isinstance(decided, BaseException):
            counters.commands_rejected += 1
            if future is None:
                log_told_failure(actor.stream_id, message.command, decided)
            elif not future.done():
                future.set_exception(decided)
            continue
        if type(decided) is Repeat:
            # processed before: the original events, nothing decided or stored again
            if future is not None and not future.done():
                recorded = decided.recorded
                if recorded is None:  # processed earlier in this batch, so replied above
                    assert outcome.keyed is not None and command_id is not None
                    recorded = outcome.keyed[command_id]
                future.set_result(list(recorded))
            continue
        if command_id is None and (future is None or future.done()):
            offset += len(decided)
            continue
        recorded = []
        for event in decided:
            new = new_events[offset]
            recorded.append(
                RecordedEvent(
                    event,
                    actor.stream_id,
                    result.version - len(new_events) + offset + 1,
                    result.first_position + offset,
                    new.event_id,
                    result.recorded_at,
                    message.metadata,
                )
            )
            offset += 1
        if command_id is not None and recorded:
            assert outcome.keyed is not None
            outcome.keyed[command_id] = recorded
            actor.remember(command_id, recorded)
        if future is not None and not future.done():
            future.set_result(recorded if command_id is None else list(recorded))


def report(actor: BatchActor, outcome: BatchOutcome, version: int | None) -> None:
    """Count a batch's commands by outcome and its events by type (metrics are on)."""
    metrics = actor.context.metrics
    assert metrics is not None
    category = actor.decider.name
    outcomes: dict[str, int] = {}
    for decided in outcome.results:
        if isinstance(decided, Rejected):
            kind = "rejected"
        elif isinstance(decided, BaseException):
            kind = "failed"
        else:
            kind = "accepted"
        outcomes[kind] = outcomes.get(kind, 0) + 1
    for kind, count in outcomes.items():
        metrics.add(COMMANDS, count, {"category": category, "outcome": kind})
    types: dict[str, int] = {}
    for new in outcome.new_events:
        types[new.type] = types.get(new.type, 0) + 1
    for event_type, count in types.items():
        metrics.add(EVENTS_APPENDED, count, {"category": category, "event_type": event_type})
    if version is not None:
        metrics.record(STREAM_LENGTH, version, {"category": category})


def reply_error(actor: BatchActor, batch: list[Command], error: Exception) -> None:
    if actor.context.metrics is not None:
        labels = {"category": actor.decider.name, "outcome": "failed"}
        actor.context.metrics.add(COMMANDS, len(batch), labels)
    counters = actor.context.counters
    for message in batch:
        counters.commands_processed += 1
        future = message.reply
        if future is None:
            log_told_failure(actor.stream_id, message.command, error)
        elif not future.done():
            future.set_exception(error)


class BatchOutcome:
    """What deciding a batch produced (a plain slotted class).

    Replied outcomes are kept in ``ActorContext.spare_outcomes`` and used again, with their
    ``results`` list: under load the garbage collector's work grows with the objects each
    command keeps alive until its commit (its young collections promote them, and the older
    generations' collections then walk them), and these two were two of about fourteen.
    """

    __slots__ = (
        "batch",
        "corrupted",
        "keyed",
        "new_events",
        "rest",
        "results",
        "retries",
        "stale",
        "start_version",
        "timers",
        "timers_from",
        "unsealed",
    )

    def __init__(self) -> None:
        #: per decided message: its events, () for no change, or the error to reply with
        self.results: list[Any] = []
        self.clear()

    def clear(self) -> None:
        """Forget the batch, for a next one (dropping what it held: events, errors)."""
        self.results.clear()
        #: a new list per batch (see Actor._decide_batch)
        self.new_events: list[NewEvent] = _NO_EVENTS
        #: an event failed to encode or apply: the state is no longer trustworthy
        self.corrupted = False
        #: messages not decided because of that failure
        self.rest: list[Command] = _NO_MESSAGES
        #: explicit command ids decided in this batch -> their recorded events (once replied)
        self.keyed: dict[str, list[RecordedEvent[Any]]] | None = None
        #: once its events are handed to the store: the messages decided (in order), the
        #: version the append expects, and how often it was retried after a conflict
        self.batch: list[Command] = _NO_MESSAGES
        self.start_version = 0
        self.retries = 0
        #: the timer writes the batch's handlers decided (None: none), stored with its events
        self.timers: list[TimerChange] | None = None
        #: the index of the last command that added timer writes, and where its writes begin
        self.timers_from: tuple[int, int] | None = None
        #: some personal fields wait for their subjects' keys: seal them before the append
        self.unsealed = False
        #: a conditional command expected a version past the actor's (see precondition_refusal)
        self.stale = False


class Repeat:
    """The reply to a command processed before: its original recorded events."""

    __slots__ = ("recorded",)

    def __init__(self, recorded: list[RecordedEvent[Any]] | None) -> None:
        #: the events; None when the command was decided earlier in the same batch
        self.recorded = recorded


#: what a store lookup found for explicit command ids: their events, or the error to reply with
Known = dict[str, "list[RecordedEvent[Any]] | Exception"]


_NO_MESSAGES: list[Command] = []
_NO_EVENTS: list[NewEvent] = []

#: the most replied outcomes a runtime keeps for reuse (about the batches in flight at once)
SPARE_OUTCOMES: Final = 4096


def crash_error(stream_id: str, exc: BaseException) -> Exception:
    """What the callers of a crashed actor get: the error, or that it stopped."""
    return exc if isinstance(exc, Exception) else ActorFailedError(stream_id, "stopped")


def fail_unanswered(stream_id: str, batch: list[Command], exc: BaseException) -> None:
    """A bug stopped the actor while it decided or answered a batch: its callers not yet
    answered get the error, rather than waiting for ever."""
    error = crash_error(stream_id, exc)
    for message in batch:
        future = message.reply
        if future is not None and not future.done():
            future.set_exception(error)


def log_told_failure(stream_id: str, command: object, error: BaseException) -> None:
    logger.warning(
        "told command failed",
        extra={
            "stream_id": stream_id,
            "command_type": type(command).__name__,
            "error": f"{type(error).__name__}: {error}",
        },
    )
