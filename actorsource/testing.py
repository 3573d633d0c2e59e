"""Test your own aggregates: given/when/then without a runtime, and a runtime for async tests.

Given/when/then runs an aggregate's pure functions (its :class:`~actorsource.Decider`), with no
event loop and no store. It works for an :class:`~actorsource.Aggregate` subclass and for a
:class:`~actorsource.Decider` alike::

    from actorsource import Rejected
    from actorsource.testing import given

    def test_withdrawing_takes_from_the_balance() -> None:
        given(Account, Deposited(10)).when(Withdraw(4)).then(Withdrew(4)).then_state(
            lambda account: account.balance == 6
        )

    def test_withdrawing_more_than_the_balance_is_refused() -> None:
        given(Account).when(Withdraw(5)).raises(Rejected, match="insufficient")

Each step does what an actor does, in memory:

- ``given(aggregate, *events)`` stores the events and folds them into the state, as an actor
  loading the aggregate's stream would.
- ``.when(command)`` decides the command on that state and applies its events. Its outcome is
  what ``ask`` would give: the events, or the exception (:class:`~actorsource.Rejected`,
  :class:`~actorsource.UnknownCommandError`, :class:`~actorsource.InvalidEventError`, or
  :class:`~actorsource.EventApplyError` when an applier raised).
- ``.then(*events)``, ``.then_state(expected)`` and ``.raises(error_type)`` check that outcome
  and raise :class:`AssertionError` with the difference. ``.then()`` means "no events".
- ``.when(...)`` after a successful ``.when(...)`` goes on from the state after its events, so
  a scenario can run several commands in a row. After a command that raised, ``.when(...)`` is
  refused (a refused command changes nothing: start the next scenario from the same ``given``).
  ``.raises(...)`` ends a scenario and returns the exception, for checks of its attributes.

What the kit adds to hand-written asserts: every given and decided event goes through the
library's codec and JSON text and back, exactly as on its way to the store and out again. An
event the runtime could not store (a field JSON cannot hold, an event class the aggregate does
not register) or could not load again as it was (a value that does not fit its field's type)
fails the test at once, with the codec's error. A command handler that changes its state (only
appliers may) fails too, when the state compares by value.

Read models are tested the same way, without a runtime: :func:`given_events` stores events
and :meth:`GivenEvents.project` runs a projection's handlers on them as the runtime would::

    def test_balances_add_up_per_account() -> None:
        given_events(
            ("Account-a", Deposited(10)), ("Account-a", Withdrew(3)), ("Account-b", Deposited(1))
        ).project(Balances()).then(
            lambda balances: balances.by_account, {"Account-a": 7, "Account-b": 1}
        )

For tests that need the runtime itself, :func:`runtime` is an open
:class:`~actorsource.Runtime` on a fresh :class:`~actorsource.InMemoryEventStore`. A fixture
for your ``conftest.py``, with anyio's pytest plugin (``anyio_mode = "auto"``)::

    @pytest.fixture
    async def runtime() -> AsyncIterator[Runtime]:
        async with actorsource.testing.runtime() as opened:
            yield opened

(Installed, actorsource is a pytest plugin that gives such fixtures ready-made:
``actorsource_runtime``, ``actorsource_sqlite_runtime``, ``actorsource_postgres_runtime`` and
``actorsource_store``; see :mod:`actorsource.pytest_plugin`.) :class:`ManualClock` is a clock
that moves only when the test moves it, for policies that take one
(``Backoff(clock=...)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Self, TypedDict, TypeVar, Unpack, overload

from ._aggregate import Aggregate, decider_of
from ._codec import Codec
from ._decider import Decider
from ._errors import CodecError, EventApplyError
from ._metrics import Metrics
from ._models import field_values
from ._policies import Backoff, Passivation, SnapshotEvery, SnapshotInterval
from ._projection_kit import GivenEvents, Projected, given_events
from ._records import NewEvent
from ._runtime import Runtime
from ._timer_effects import encode_effects
from ._timers import Cancel, Decided, Schedule, Timers
from .cluster import Cluster
from .stores._base import decode_json, encode_json
from .stores.memory import InMemoryEventStore

__all__ = [
    "FakeClock",
    "Given",
    "GivenEvents",
    "ManualClock",
    "Projected",
    "RuntimeOptions",
    "When",
    "given",
    "given_events",
    "runtime",
]

A = TypeVar("A", bound=Aggregate)
S = TypeVar("S")
X = TypeVar("X", bound=BaseException)

#: an event as the store would hold it: its stored type name and its data as JSON text
_Stored = tuple[str, str]


@overload
def given(aggregate: type[A], *events: object) -> Given[A]: ...


@overload
def given(aggregate: Decider[Any, Any, S], *events: object) -> Given[S]: ...


def given(aggregate: Any, *events: object) -> Given[Any]:
    """Start a scenario: an aggregate whose stream holds ``events``, oldest first.

    Each event is stored and read back as the runtime would (codec, then JSON text), then
    applied to the initial state.

    :param aggregate: an :class:`~actorsource.Aggregate` subclass or a
        :class:`~actorsource.Decider`
    :param events: the aggregate's history (none: a new aggregate)
    :return: the scenario, to go on with :meth:`Given.when` or :meth:`Given.then_state`
    :raises AssertionError: if a given event cannot be stored and read back as it was, or its
        applier raised
    :raises DefinitionError: if the aggregate class is malformed
    """
    __tracebackhide__ = True  # pytest: show the failing test's line, not this one
    decider = aggregate if isinstance(aggregate, Decider) else decider_of(aggregate)
    codec = Codec()
    codec.register_events(decider.event_types)
    stream = tuple(
        _store(decider, codec, event, f"given event [{index}]")
        for index, event in enumerate(events)
    )
    scenario: Given[Any] = Given(decider, codec, stream)
    state = decider.initial_state
    for index, event in enumerate(scenario._read_back()):
        try:
            state = decider.fold([event], state)
        except Exception as exc:
            msg = (
                f"applying given event [{index}] {event!r} to {decider.name} raised "
                f"{type(exc).__name__}: {exc}; the runtime could not load this stream either"
            )
            raise AssertionError(msg) from exc
    return scenario


class _Scenario(Generic[S]):
    """What both steps share: the aggregate, its codec, and its stream as stored."""

    __slots__ = ("_codec", "_decider", "_stream")

    def __init__(self, decider: Decider[Any, Any, S], codec: Codec, stream: tuple[_Stored, ...]):
        self._decider = decider
        self._codec = codec
        self._stream = stream

    def _read_back(self) -> list[object]:
        """Return the stream's events decoded from their stored form (new objects each time)."""
        decode = self._codec.decode_event
        return [decode(type_name, decode_json(text)) for type_name, text in self._stream]

    def _state(self) -> S:
        # rebuilt from the stored events every time, as a reloading actor would: a check can
        # never see (or cause) a change made through an object that an earlier step returned
        return self._decider.fold(self._read_back())

    def _when(self, command: object) -> When[S]:
        decider = self._decider
        state = self._state()
        try:
            events = decider.decide_events(command, state)
            if isinstance(events, Decided):  # as the runtime would encode them, or refuse
                now = datetime.now(UTC)
                encode_effects(self._codec, now, decider, f"{decider.name}-test", events.effects)
        except Exception as exc:  # what ask would raise: Rejected, UnknownCommandError, ...
            return When(decider, self._codec, self._stream, command=command, events=[], error=exc)
        if _compares_by_value(state) and state != self._state():
            msg = (
                f"the handler of {command!r} changed the state of {decider.name} (it is now "
                f"{state!r}); a command handler must not change the state: return events, and "
                "change the state in their appliers"
            )
            raise AssertionError(msg)
        stored = [
            _store(decider, self._codec, event, f"event [{index}] decided for {command!r}")
            for index, event in enumerate(events)
        ]
        for event in events:
            try:
                state = decider.fold([event], state)
            except Exception as exc:
                error = EventApplyError(f"{decider.name}-test", type(event).__name__, exc)
                error.__cause__ = exc
                return When(
                    decider, self._codec, self._stream, command=command, events=events, error=error
                )
        stream = (*self._stream, *stored)
        return When(decider, self._codec, stream, command=command, events=events, error=None)

    def _check_state(self, expected: S | Callable[[S], bool], after: str) -> None:
        __tracebackhide__ = True
        state = self._state()
        if callable(expected):
            verdict = expected(state)
            if not verdict:
                name = getattr(expected, "__qualname__", repr(expected))
                msg = f"the state {after} does not satisfy {name} (it returned {verdict!r}):\n"
                msg += f"  state: {state!r}"
                raise AssertionError(msg)
            return
        if state != expected:
            msg = f"the state {after} is not the expected one:\n"
            msg += f"  expected: {expected!r}\n  actual:   {state!r}"
            msg += _field_differences(expected, state)
            raise AssertionError(msg)


class Given(_Scenario[S]):
    """An aggregate with a history of events, before a command (made by :func:`given`).

    ``S`` is the aggregate's state type (the aggregate class for the class form).
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<Given {self._decider.name} with {_count(len(self._stream))}>"

    @property
    def state(self) -> S:
        """A fresh copy of the state after the given events, rebuilt from their stored form."""
        return self._state()

    def when(self, command: object) -> When[S]:
        """Decide ``command`` on the state after the given events, and apply its events.

        A scenario can be used for several ``when`` calls: each starts from the given events.

        :return: the outcome, to check with :meth:`When.then`, :meth:`When.then_state` or
            :meth:`When.raises`
        :raises AssertionError: if a decided event cannot be stored and read back as it was, or
            the command handler changed the state
        """
        __tracebackhide__ = True
        return self._when(command)

    def then_state(self, expected: S | Callable[[S], bool]) -> Self:
        """Check the state after the given events (a test of the appliers alone).

        :param expected: the expected state (compared with ``==``), or a predicate that returns
            true for the expected state (any callable is taken as a predicate)
        :return: this scenario, to go on
        :raises AssertionError: if the state differs from ``expected`` or the predicate returned
            a false value
        """
        __tracebackhide__ = True
        self._check_state(expected, f"after {_count(len(self._stream))}")
        return self


class When(_Scenario[S]):
    """The outcome of a command on a :class:`Given` (made by :meth:`Given.when`).

    It holds the events the command decided, or the exception it raised, as ``ask`` would have
    given them.
    """

    __slots__ = ("_command", "_error", "_events")

    def __init__(
        self,
        decider: Decider[Any, Any, S],
        codec: Codec,
        stream: tuple[_Stored, ...],
        *,
        command: object,
        events: list[object],
        error: Exception | None,
    ) -> None:
        super().__init__(decider, codec, stream)
        self._command = command
        self._events = events
        self._error = error

    def __repr__(self) -> str:
        if self._error is not None:
            outcome = f"raised {type(self._error).__name__}"
        else:
            outcome = f"decided {_count(len(self._events))}"
        return f"<When {self._command!r} on {self._decider.name}: {outcome}>"

    @property
    def events(self) -> list[object]:
        """The events the command decided, for checks that ``then`` cannot express.

        :raises AssertionError: if the command raised
        """
        __tracebackhide__ = True
        self._require_success("return its events")
        return list(self._events)

    @property
    def state(self) -> S:
        """A fresh copy of the state after the command's events.

        :raises AssertionError: if the command raised
        """
        __tracebackhide__ = True
        self._require_success("return the state after it")
        return self._state()

    def when(self, command: object) -> When[S]:
        """Decide another command on the state after this command's events.

        :return: the new command's outcome
        :raises AssertionError: if this command raised (a scenario goes on only after a success),
            or if a decided event cannot be stored and read back as it was
        """
        __tracebackhide__ = True
        self._require_success(f"go on with {command!r}")
        return self._when(command)

    def then(self, *expected: object) -> Self:
        """Check that the command decided exactly ``expected``, in order (none: no events).

        Events are compared with ``==`` (attrs classes compare their fields).

        :return: this outcome, to go on with :meth:`then_state` or :meth:`when`
        :raises AssertionError: if the command raised, or decided other events; the message
            shows both lists and the first difference
        """
        __tracebackhide__ = True
        self._require_success(f"check for {_count(len(expected)) if expected else 'no events'}")
        actual = self._events
        if list(expected) == actual:
            return self
        if not expected:
            msg = f"{self._command!r} decided {_count(len(actual))}, expected none:\n"
            msg += _listing(actual)
            raise AssertionError(msg)
        index = next(
            (i for i, (e, a) in enumerate(zip(expected, actual, strict=False)) if e != a),
            min(len(expected), len(actual)),
        )
        if len(expected) == len(actual):
            msg = f"{self._command!r} decided other events than expected; "
        else:
            msg = (
                f"{self._command!r} decided {_count(len(actual))}, "
                f"expected {_count(len(expected))}; "
            )
        msg += f"first difference at index {index}:\n"
        msg += f"  expected: {_item(expected, index)}\n  actual:   {_item(actual, index)}"
        if index < min(len(expected), len(actual)):
            msg += _field_differences(expected[index], actual[index])
        msg += f"\nexpected events:\n{_listing(expected)}\nactual events:\n{_listing(actual)}"
        raise AssertionError(msg)

    def then_scheduled(self, *expected: Schedule | Cancel) -> Self:
        """Check that the command's handler returned exactly these timer effects, in order
        (none: it scheduled and cancelled nothing).

        Effects compare by value (``Schedule(Expire(), key="k", after=...)`` equals another
        with the same fields).

        :return: this outcome, to go on
        :raises AssertionError: if the command raised, or returned other effects
        """
        __tracebackhide__ = True
        self._require_success("check its timers")
        events = self._events
        actual = list(events.effects) if isinstance(events, Decided) else []
        if list(expected) == actual:
            return self
        msg = (
            f"{self._command!r} returned other timer effects than expected:\n"
            f"expected:\n{_listing(expected)}\nactual:\n{_listing(actual)}"
        )
        raise AssertionError(msg)

    def then_state(self, expected: S | Callable[[S], bool]) -> Self:
        """Check the state after the command's events.

        :param expected: the expected state (compared with ``==``), or a predicate that returns
            true for the expected state (any callable is taken as a predicate)
        :return: this outcome, to go on
        :raises AssertionError: if the command raised, the state differs from ``expected``, or
            the predicate returned a false value
        """
        __tracebackhide__ = True
        self._require_success("check the state after it")
        self._check_state(expected, f"after {self._command!r}")
        return self

    def raises(self, expected: type[X], *, match: str | None = None) -> X:
        """Check that the command raised ``expected`` (or a subclass); end the scenario.

        :param expected: the exception type, e.g. :class:`~actorsource.Rejected`
        :param match: a regular expression that ``re.search`` must find in the message
        :return: the exception, for checks of its attributes
        :raises AssertionError: if the command raised nothing, something else, or a message
            that ``match`` does not find
        """
        __tracebackhide__ = True
        error = self._error
        wanted = expected.__name__
        if error is None:
            msg = (
                f"{self._command!r} was expected to raise {wanted}, but it decided "
                f"{_count(len(self._events))}"
            )
            if self._events:
                msg += f":\n{_listing(self._events)}"
            raise AssertionError(msg)
        if not isinstance(error, expected):
            msg = (
                f"{self._command!r} was expected to raise {wanted}, but it raised "
                f"{type(error).__name__}: {error}"
            )
            raise AssertionError(msg) from error
        if match is not None and re.search(match, str(error)) is None:
            msg = (
                f"{self._command!r} raised {type(error).__name__} as expected, but its message "
                f"{str(error)!r} does not match {match!r}"
            )
            raise AssertionError(msg) from error
        return error

    def _require_success(self, what: str) -> None:
        """Raise an AssertionError saying that the command raised, so ``what`` cannot be done."""
        __tracebackhide__ = True
        error = self._error
        if error is not None:
            msg = (
                f"cannot {what}: {self._command!r} raised {type(error).__name__}: {error}\n"
                "(check a failure with .raises(); a scenario goes on only after a success)"
            )
            raise AssertionError(msg) from error


class FakeClock:
    """A clock for tests that moves only when told (``Timers(clock=FakeClock())``).

    Nothing sleeps: :meth:`advance` moves the time and wakes whatever waits for it; then
    ``await runtime.fire_due_timers()`` returns once what came due was delivered.

    :param start: the time it shows first (default: 2030-01-01 00:00 UTC)
    """

    def __init__(self, start: datetime | None = None) -> None:
        if start is None:
            start = datetime(2030, 1, 1, tzinfo=UTC)
        if start.utcoffset() is None:
            msg = f"FakeClock needs an aware start time, got {start!r}"
            raise ValueError(msg)
        self._now = start.astimezone(UTC)
        self._sleepers: list[tuple[datetime, asyncio.Future[None]]] = []

    def __repr__(self) -> str:
        return f"FakeClock({self._now.isoformat()})"

    def now(self) -> datetime:
        """Return the time it shows."""
        return self._now

    def advance(self, delta: timedelta | None = None, /, **units: float) -> datetime:
        """Move the time forward by ``delta`` or by ``timedelta(**units)``
        (``advance(minutes=15)``), wake what waits for it, and return the new time.

        :raises ValueError: if the step is negative (time does not go back)
        """
        step = delta if delta is not None else timedelta(**units)
        if step < timedelta(0):
            msg = f"a FakeClock only moves forward, got a step of {step}"
            raise ValueError(msg)
        self._now += step
        waiting = []
        for deadline, future in self._sleepers:
            if deadline <= self._now:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((deadline, future))
        self._sleepers = waiting
        return self._now

    async def sleep_until(self, deadline: datetime) -> None:
        """Return once :meth:`advance` reached ``deadline``."""
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((deadline, future))
        await future


class RuntimeOptions(TypedDict, total=False):
    """The keyword arguments of :class:`~actorsource.Runtime`, for :func:`runtime`."""

    snapshot_every: int | None
    passivate_after: float | None
    max_active: int | None
    mailbox_size: int
    max_batch: int
    max_conflict_retries: int
    ask_timeout: float | None
    shutdown_timeout: float | None
    max_activations: int
    activation_timeout: float | None
    poll_interval: float
    metrics: Metrics | None
    idempotency_window: int
    snapshot: SnapshotEvery | SnapshotInterval | None
    passivation: Passivation | None
    supervision: Backoff | None
    timers: Timers | None
    cluster: Cluster | None


@contextlib.asynccontextmanager
async def runtime(**runtime_options: Unpack[RuntimeOptions]) -> AsyncIterator[Runtime]:
    """Yield an open :class:`~actorsource.Runtime` on a fresh, empty in-memory store.

    Leaving the context closes the runtime and the store. The store is ``runtime.store``.

    :param runtime_options: passed on to :class:`~actorsource.Runtime`
    :raises ValueError: if an option is out of its range (as :class:`~actorsource.Runtime`)
    """
    async with Runtime(InMemoryEventStore(), **runtime_options) as opened:
        yield opened


class ManualClock:
    """A clock that moves only when the test moves it: seconds, like :func:`time.monotonic`.

    Pass it where a policy takes a clock (``Backoff(clock=clock)``) and move it with
    :meth:`advance` instead of sleeping::

        clock = ManualClock()
        runtime = Runtime(store, supervision=Backoff(base=1.0, clock=clock))
        ...
        clock.advance(1.0)  # the backoff is over
    """

    def __init__(self, start: float = 1000.0) -> None:
        #: the time now, in seconds
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (>= 0)."""
        if not seconds >= 0:
            msg = f"a clock moves forward only: advance by a number >= 0, got {seconds!r}"
            raise ValueError(msg)
        self.now += seconds


def _store(decider: Decider[Any, Any, Any], codec: Codec, event: object, label: str) -> _Stored:
    """Encode ``event`` as the runtime and the stores would, and check that it reads back.

    :raises AssertionError: naming the event and the codec's error
    """
    __tracebackhide__ = True
    try:
        type_name, data = codec.encode_event(event)
        # the label stands in for the event id, which the store's message names
        text = encode_json(data, "data", NewEvent(label, type_name, data, {}))
        read_back = codec.decode_event(type_name, decode_json(text))
    except CodecError as exc:
        msg = f"{label} {event!r} cannot be stored: {exc}"
        if type(event) not in decider.event_types:
            known = ", ".join(t.__name__ for t in decider.event_types) or "none"
            where = (
                "the types its @apply methods take"
                if issubclass(decider.state_type, Aggregate)
                else "the Decider's event_types"
            )
            msg += f"\n(the event types of {decider.name}, {where}: {known})"
        raise AssertionError(msg) from exc
    if _compares_by_value(event):
        same = read_back == event
    else:  # no __eq__ of its own: compare what it stores
        same = codec.encode_event(read_back)[1] == data
    if not same:
        msg = (
            f"{label} {event!r} is read back from the store as {read_back!r}; a field holds a "
            "value its annotated type does not describe"
        )
        msg += _field_differences(event, read_back)
        raise AssertionError(msg)
    return type_name, text


def _compares_by_value(value: object) -> bool:
    return type(value).__eq__ is not object.__eq__


def _count(n: int) -> str:
    return f"{n} event" if n == 1 else f"{n} events"


def _item(events: Sequence[object], index: int) -> str:
    return repr(events[index]) if index < len(events) else "(nothing)"


def _listing(events: Sequence[object]) -> str:
    if not events:
        return "  (none)"
    return "\n".join(f"  [{index}] {event!r}" for index, event in enumerate(events))


def _field_differences(expected: object, actual: object) -> str:
    """Name the fields that differ between two instances of one record class (attrs,
    dataclass or Pydantic model; "" otherwise)."""
    if type(expected) is not type(actual):
        return f"\n  (expected a {type(expected).__name__}, got a {type(actual).__name__})"
    wanted, got = field_values(expected), field_values(actual)
    if wanted is None or got is None:
        return ""
    lines = [
        f"\n  {name}: expected {value!r}, got {got[name]!r}"
        for name, value in wanted.items()
        if value != got[name]
    ]
    return "".join(lines)
