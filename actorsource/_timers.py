"""Durable timers in the pure core: the effects a command handler returns beside its events,
the clock timers run by, and the records a store keeps for them.

A handler schedules a future command with :class:`Schedule` and drops one with :class:`Cancel`;
the runtime stores both in the transaction of the events decided with them. No I/O here: the
effects are plain values, and the records hold JSON-ready data only (stores never see domain
classes).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import attrs

from ._policies import check_seconds
from ._records import JSONDict


class Missed(enum.Enum):
    """What a recurring timer does with the ticks that came due while nothing ran."""

    #: deliver the oldest missed tick once, then go on from the first tick after now
    ONCE = "once"
    #: deliver every missed tick, one after the other, each with its own ``command_id``
    EACH = "each"


def _check_key(owner: str, key: object) -> str:
    if not isinstance(key, str) or not key or "\x00" in key:
        msg = f"{owner}: key must be a non-empty str without NUL, got {key!r}"
        raise ValueError(msg)
    return key


class Schedule:
    """An effect: deliver ``command`` later, once (``at=``/``after=``) or every ``every``.

    Returned by a command handler beside its events (``return [Placed(...), Schedule(...)]``).
    The timer belongs to the aggregate that decided it and is named by ``key`` there: a later
    ``Schedule`` with the same key replaces it, ``Cancel(key)`` drops it.

    :param command: the command to deliver (of a class its target aggregate handles)
    :param key: the timer's name within the aggregate that schedules it
    :param at: when to deliver it (an aware datetime)
    :param after: how long from now to deliver it (instead of ``at``)
    :param every: the interval of a recurring timer; its first tick is ``at``/``after``, or
        one interval from now
    :param missed: what a recurring timer does with ticks that came due while nothing ran
    :param to: the aggregate to deliver to, as ``runtime.ref`` names it:
        ``(Warehouse, "w1")`` (default: the aggregate that schedules it)
    :raises ValueError: if the key is empty, the times are missing, both given, naive or
        negative, or ``to`` is not a pair
    """

    __slots__ = ("after", "at", "command", "every", "key", "missed", "to")

    def __init__(
        self,
        command: object,
        *,
        key: str,
        at: datetime | None = None,
        after: timedelta | None = None,
        every: timedelta | None = None,
        missed: Missed = Missed.ONCE,
        to: tuple[Any, str] | None = None,
    ) -> None:
        where = f"Schedule({type(command).__name__})"
        _check_key(where, key)
        if at is not None and after is not None:
            msg = f"{where}: give at= or after=, not both"
            raise ValueError(msg)
        if at is None and after is None and every is None:
            msg = f"{where}: give at= (a datetime), after= (a timedelta) or every= (a timedelta)"
            raise ValueError(msg)
        if at is not None and (not isinstance(at, datetime) or at.utcoffset() is None):
            msg = f"{where}: at= must be an aware datetime (with a time zone), got {at!r}"
            raise ValueError(msg)
        if after is not None and (not isinstance(after, timedelta) or after < timedelta(0)):
            msg = f"{where}: after= must be a timedelta >= 0, got {after!r}"
            raise ValueError(msg)
        if every is not None and (not isinstance(every, timedelta) or every <= timedelta(0)):
            msg = f"{where}: every= must be a timedelta > 0, got {every!r}"
            raise ValueError(msg)
        if not isinstance(missed, Missed):
            msg = f"{where}: missed= must be Missed.ONCE or Missed.EACH, got {missed!r}"
            raise ValueError(msg)
        if to is not None and (
            not isinstance(to, tuple) or len(to) != 2 or not isinstance(to[1], str) or not to[1]
        ):
            msg = f"{where}: to= must be (aggregate class or Decider, aggregate id), got {to!r}"
            raise ValueError(msg)
        self.command = command
        self.key = key
        self.at = at
        self.after = after
        self.every = every
        self.missed = missed
        self.to = to

    def due(self, now: datetime) -> datetime:
        """The first time the command is due, if scheduled at ``now``."""
        if self.at is not None:
            return self.at.astimezone(UTC)
        step = self.after if self.after is not None else self.every
        assert step is not None
        return now + step

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # compared by value, like an attrs class

    def __repr__(self) -> str:
        shown = [f"{self.command!r}", f"key={self.key!r}"]
        for name in ("at", "after", "every", "to"):
            value = getattr(self, name)
            if value is not None:
                shown.append(f"{name}={value!r}")
        if self.every is not None:
            shown.append(f"missed={self.missed}")
        return f"Schedule({', '.join(shown)})"


@attrs.frozen(slots=True)
class Cancel:
    """An effect: drop the timer ``key`` this aggregate scheduled (nothing if there is none)."""

    key: str = attrs.field(validator=lambda _, __, key: _check_key("Cancel", key))


#: what a handler may return beside its events
Effect = Schedule | Cancel


class Decided(list[Any]):
    """The events a handler returned, with the effects it returned beside them.

    Only made for handlers that returned effects: the others' events stay a plain list, so
    telling them apart is one type check.
    """

    __slots__ = ("effects",)

    def __init__(self, events: list[Any], effects: list[Effect]) -> None:
        super().__init__(events)
        #: the handler's :class:`Schedule` and :class:`Cancel` values, in order
        self.effects = effects


# -- the clock ---------------------------------------------------------------------------------


class Clock(Protocol):
    """The time timers run by: the system's, or a test's fake one (:class:`FakeClock`)."""

    def now(self) -> datetime:
        """Return the current time (aware, UTC)."""
        ...

    async def sleep_until(self, deadline: datetime) -> None:
        """Return once :meth:`now` has reached ``deadline``."""
        ...


class SystemClock:
    """The system's clock (the default)."""

    def now(self) -> datetime:
        """Return the current time (UTC)."""
        return datetime.now(UTC)

    async def sleep_until(self, deadline: datetime) -> None:
        """Sleep until ``deadline`` by the system's clock."""
        delay = (deadline - self.now()).total_seconds()
        await asyncio.sleep(max(delay, 0.0))

    def __repr__(self) -> str:
        return "SystemClock()"


# -- what a store keeps --------------------------------------------------------------------------


@attrs.frozen(slots=True)
class TimerSchedule:
    """A timer to store, replacing the owner's timer of that key (and any claim on it)."""

    #: the stream of the aggregate that scheduled it
    owner: str
    #: its name within the owner
    key: str
    #: the stream the command goes to
    target: str
    #: the command's stored type name
    command_type: str
    #: the command's fields, JSON-ready
    data: JSONDict
    #: when it is due (aware, UTC)
    due_at: datetime
    #: seconds between ticks of a recurring timer (None: one-shot)
    interval: float | None
    #: a :class:`Missed` value: ``"once"`` or ``"each"``
    missed: str


@attrs.frozen(slots=True)
class TimerCancel:
    """A timer to drop (nothing if the owner has none of that key)."""

    owner: str
    key: str


#: one timer write carried by an append
TimerChange = TimerSchedule | TimerCancel


@attrs.frozen(slots=True)
class StoredTimer:
    """A timer as the store holds it (what listing and claiming return)."""

    owner: str
    key: str
    target: str
    command_type: str
    data: JSONDict
    due_at: datetime
    interval: float | None
    missed: str
    #: who holds the claim on it (None: nobody)
    claimed_by: str | None = None
    #: when that claim lapses (None: not claimed)
    claim_expires: datetime | None = None

    @property
    def command_id(self) -> str:
        """The ``command_id`` its delivery at :attr:`due_at` carries: the same for every
        delivery of one tick, so that a repeated one takes effect once."""
        return timer_command_id(self.owner, self.key, self.due_at)

    def next_due(self, now: datetime) -> datetime | None:
        """When it is due after delivering this tick at ``now`` (None: it is done)."""
        if self.interval is None:
            return None
        step = timedelta(seconds=self.interval)
        following = self.due_at + step
        if self.missed == Missed.ONCE.value and following <= now:
            skipped = (now - self.due_at) // step
            following = self.due_at + step * (skipped + 1)
        return following


def timer_command_id(owner: str, key: str, due_at: datetime) -> str:
    """The deterministic ``command_id`` of a timer's tick due at ``due_at``."""
    return f"timer:{owner}:{key}:{epoch_us(due_at)}"


def epoch_us(when: datetime) -> int:
    """Microseconds since the Unix epoch (how the stores order and compare due times)."""
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_epoch_us(value: int) -> datetime:
    """The aware UTC datetime of :func:`epoch_us`."""
    return _EPOCH + timedelta(microseconds=value)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# -- the runtime's policy --------------------------------------------------------------------


def _aggregates(value: object) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        msg = (
            f"Timers(aggregates=...) must be a list of aggregate classes or Deciders, got {value!r}"
        )
        raise ValueError(msg)
    return tuple(value)


def _positive(name: str) -> Any:
    def check(_: object, __: object, value: object) -> None:
        check_seconds(f"Timers({name}=...)", value)

    return check


def _count(name: str) -> Any:
    def check(_: object, __: object, value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            msg = f"Timers({name}=...) must be an int >= 1, got {value!r}"
            raise ValueError(msg)

    return check


@attrs.frozen
class Timers:
    """How a runtime delivers the durable timers that came due (``Runtime(timers=...)``).

    A runtime given this claims the due timers whose commands go to ``aggregates`` (and to any
    other aggregate it has made a ref to), delivers each as a command with a deterministic
    ``command_id``, and marks it done. Several runtimes may do so on one store: each due timer
    is claimed by one of them, for ``lease`` seconds.

    :ivar aggregates: the aggregates (classes or Deciders) whose timers this runtime delivers
    :ivar clock: the time timers run by (a test's :class:`~actorsource.testing.FakeClock`)
    :ivar lease: seconds a claim holds; a timer whose claimer died (or hung) that long is
        delivered again, by whoever claims it next
    :ivar poll_interval: seconds between looks for timers that other processes stored
        (this runtime's own schedules wake it at once)
    :ivar max_claim: the most timers claimed at once
    """

    aggregates: tuple[Any, ...] = attrs.field(default=(), converter=_aggregates)
    clock: Clock = attrs.field(factory=SystemClock)
    lease: float = attrs.field(default=30.0, validator=_positive("lease"))
    poll_interval: float = attrs.field(default=1.0, validator=_positive("poll_interval"))
    max_claim: int = attrs.field(default=100, validator=_count("max_claim"))
