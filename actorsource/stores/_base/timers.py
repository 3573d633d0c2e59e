"""The timer part of the store contract, and the checks every store makes at its door.

A store that keeps durable timers declares it (:attr:`StoreCapabilities.timers`): appends that
carry timer writes, and claims on due timers with a lease, so that several processes on one
store deliver each due timer once between them. Timers are stored as JSON-ready records
(:class:`StoredTimer`): a command's type name and data, never a domain class.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Protocol

import orjson

from ..._errors import CodecError
from ..._records import AppendResult, NewEvent
from ..._timers import Missed, StoredTimer, TimerChange, TimerSchedule
from .checks import check_append, check_stream_id
from .coding import _has_non_finite_float

_MISSED = frozenset(m.value for m in Missed)


class TimerStore(Protocol):
    """Durable timers, kept in the store's own transactions."""

    async def append_with_timers(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        timers: Sequence[TimerChange],
    ) -> AppendResult:
        """Append ``events`` (maybe none) and apply ``timers`` in one transaction.

        Both or neither: a refused append (:class:`ConcurrencyError`, a store failure) writes
        no timer. A :class:`TimerSchedule` replaces the owner's timer of its key, and any claim
        on it; a :class:`TimerCancel` drops it. With no events the append only checks the
        version (the decision rested on that state) and reports it unchanged.

        :raises ConcurrencyError: if the stream is not at ``expected_version``
        :raises ValueError: if an argument is malformed (nothing is stored)
        :raises StoreError: if the store fails; nothing of this append is stored then
        """
        ...

    async def claim_due_timers(
        self,
        claimant: str,
        now: datetime,
        lease: float,
        *,
        limit: int,
        categories: Collection[str] | None = None,
    ) -> list[StoredTimer]:
        """Claim up to ``limit`` timers due at ``now`` that nobody holds, oldest due first.

        A timer is free when it has no claim or its claim lapsed before ``now``. Claiming is
        atomic: of several claimants at once, each timer goes to one. The claim lapses
        ``lease`` seconds after ``now``; then another claimant may take it (its holder died).

        :param categories: only timers whose target stream is of these categories
        :return: the claimed timers, with :attr:`StoredTimer.claimed_by` set
        """
        ...

    async def finish_timer(
        self, timer: StoredTimer, claimant: str, next_due: datetime | None
    ) -> bool:
        """Mark a claimed timer's tick done: drop it (``next_due`` None), or move it to
        ``next_due`` and free it.

        Nothing happens (and False is returned) if the timer was replaced, cancelled, or
        claimed by another since ``claimant`` claimed this tick.
        """
        ...

    async def list_timers(self) -> list[StoredTimer]:
        """Return every timer, the earliest due first."""
        ...


def check_timer_append(
    stream_id: str, expected_version: int, events: Sequence[NewEvent], timers: Sequence[TimerChange]
) -> None:
    """Raise a ValueError naming what is wrong with the arguments of a timed append."""
    if not isinstance(expected_version, int) or isinstance(expected_version, bool):
        msg = (
            f"expected_version of an append with timers to {stream_id!r} must be an int >= 0 "
            f"(the decision rested on that version), got {expected_version!r}"
        )
        raise ValueError(msg)
    if events:
        check_append(stream_id, expected_version, events)
    else:
        check_stream_id(stream_id)
        if expected_version < 0:
            msg = f"expected_version of an append to {stream_id!r} must be >= 0"
            raise ValueError(msg)
    if not timers:
        msg = f"an append with timers to {stream_id!r} needs at least one timer write"
        raise ValueError(msg)
    for change in timers:
        if change.owner != stream_id:
            msg = (
                f"a timer write of {change.owner!r} cannot go with an append to {stream_id!r}: "
                "a timer belongs to the stream that decided it"
            )
            raise ValueError(msg)
        _check_text("a timer key", change.key)
        if isinstance(change, TimerSchedule):
            _check_schedule(change)


def _check_schedule(timer: TimerSchedule) -> None:
    check_stream_id(timer.target)
    _check_text("a timer's target stream", timer.target)
    _check_text("a timer's command type", timer.command_type)
    if not isinstance(timer.data, dict):
        msg = f"timer {timer.key!r}: its command data must be a dict, got {timer.data!r}"
        raise ValueError(msg)
    if not isinstance(timer.due_at, datetime) or timer.due_at.utcoffset() is None:
        msg = f"timer {timer.key!r}: due_at must be an aware datetime, got {timer.due_at!r}"
        raise ValueError(msg)
    interval = timer.interval
    if interval is not None and (
        not isinstance(interval, (int, float)) or not math.isfinite(interval) or interval <= 0
    ):
        msg = f"timer {timer.key!r}: interval must be seconds > 0 or None, got {interval!r}"
        raise ValueError(msg)
    if timer.missed not in _MISSED:
        msg = f"timer {timer.key!r}: missed must be one of {sorted(_MISSED)}, got {timer.missed!r}"
        raise ValueError(msg)


def _check_text(what: str, value: object) -> None:
    if not isinstance(value, str) or not value or "\x00" in value:
        msg = f"{what} must be a non-empty str without NUL, got {value!r}"
        raise ValueError(msg)


def check_claim(claimant: object, now: object, lease: object, limit: object) -> None:
    """Raise a ValueError naming what is wrong with the arguments of a claim."""
    _check_text("a claimant id", claimant)
    if not isinstance(now, datetime) or now.utcoffset() is None:
        msg = f"now must be an aware datetime, got {now!r}"
        raise ValueError(msg)
    if not isinstance(lease, (int, float)) or not math.isfinite(lease) or lease <= 0:
        msg = f"a claim's lease must be seconds > 0, got {lease!r}"
        raise ValueError(msg)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        msg = f"a claim's limit must be an int >= 1, got {limit!r}"
        raise ValueError(msg)


def in_categories(stream_id: str, categories: Collection[str] | None) -> bool:
    """Whether a stream is of one of ``categories`` (None: any)."""
    return categories is None or stream_id.partition("-")[0] in categories


def encode_timer_data(timer: TimerSchedule) -> str:
    """Return a timer's command data as JSON text; what JSON cannot hold raises a CodecError."""
    where = f"the {timer.command_type} command of timer {timer.key!r} of {timer.owner!r}"
    try:
        text = orjson.dumps(timer.data).decode()
    except TypeError as exc:
        msg = f"{where} is not JSON-serializable: {exc}"
        raise CodecError(msg, type_name=timer.command_type) from exc
    if "null" in text and _has_non_finite_float(timer.data):
        msg = f"{where} holds NaN or an infinity, which JSON cannot hold"
        raise CodecError(msg, type_name=timer.command_type)
    return text
