"""Policies as values: when to snapshot, when to passivate, how to back off from failures.

An application composes them where it makes its runtime::

    Runtime(store, snapshot=SnapshotEvery(100), passivation=Passivation(idle_after=60.0),
            supervision=Backoff(base=0.05, limit=5.0))

Each is frozen and checked when made, so that a bad value fails where it is written.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import attrs


def check_seconds(name: str, value: Any, *, zero: bool = False, optional: bool = False) -> Any:
    """Return ``value`` if it is a finite number of seconds > 0 (>= 0 with ``zero``; or None
    with ``optional``), else raise a ValueError naming ``name``."""
    if value is None and optional:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not (value >= 0 if zero else value > 0)
    ):
        bound = ">= 0" if zero else "> 0"
        msg = f"{name} must be {bound} seconds{' or None' if optional else ''}, got {value!r}"
        raise ValueError(msg)
    return value


def _check_positive_int(owner: str, name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        msg = f"{owner}: {name} must be an int >= 1, got {value!r}"
        raise ValueError(msg)


def _check_keep(owner: str, keep: object) -> None:
    if keep is not None:
        _check_positive_int(owner, "keep", keep)


@attrs.frozen
class SnapshotEvery:
    """Save a snapshot whenever a stream's version reaches a multiple of ``events``.

    An aggregate class (or Decider) with its own ``snapshot_every`` keeps its own interval (and
    this policy's ``keep``).
    """

    #: the interval, in events
    events: int
    #: snapshots kept per stream: each save deletes the older ones in its transaction
    #: (``None``: keep every snapshot); also applies to ``ref.snapshot()``
    keep: int | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        _check_positive_int("SnapshotEvery", "events", self.events)
        _check_keep("SnapshotEvery", self.keep)

    def due(self, previous_version: int, version: int) -> bool:
        """Whether an append that took the stream from ``previous_version`` to ``version``
        crossed a multiple of the interval."""
        every = self.events
        return version // every != previous_version // every


@attrs.frozen
class SnapshotInterval:
    """Save a snapshot after an append when the last one this runtime saved of the stream (or
    the first append since the aggregate was loaded) is at least ``seconds`` old: at most one
    snapshot per stream per interval, and none for a stream nobody writes to.

    The interval counts from the aggregate's load in this runtime, so an aggregate that
    leaves memory before its interval is up saves none: combine with passivation settings, or
    use :class:`SnapshotEvery` for aggregates that come and go. An aggregate class (or
    Decider) with its own ``snapshot_every`` keeps its own interval (and this policy's
    ``keep``).
    """

    #: the least time between two snapshots of a stream, in seconds
    seconds: float
    #: snapshots kept per stream (as :attr:`SnapshotEvery.keep`)
    keep: int | None = attrs.field(default=None, kw_only=True)
    #: the clock the interval is measured on (seconds; tests pass one they move by hand)
    clock: Callable[[], float] = attrs.field(default=time.monotonic, kw_only=True)

    def __attrs_post_init__(self) -> None:
        seconds = self.seconds
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not seconds > 0:
            msg = f"SnapshotInterval: seconds must be > 0, got {seconds!r}"
            raise ValueError(msg)
        _check_keep("SnapshotInterval", self.keep)


#: when the runtime saves snapshots by itself
SnapshotPolicy = SnapshotEvery | SnapshotInterval


@attrs.frozen
class Passivation:
    """When live actors leave memory (they load again from the store on their next message).

    The default passivates nothing.
    """

    #: seconds an actor may stay idle before it leaves memory (``None``: never)
    idle_after: float | None = None
    #: the most actors holding state in memory at once; the least recently used idle one
    #: leaves to make room (``None``: no limit)
    max_active: int | None = None

    def __attrs_post_init__(self) -> None:
        check_seconds("Passivation: idle_after", self.idle_after, zero=True, optional=True)
        if self.max_active is not None:
            _check_positive_int("Passivation", "max_active", self.max_active)


@attrs.frozen
class Backoff:
    """How long an aggregate whose loads or appends keep failing is left alone.

    After the n-th failure in a row it is not loaded again for ``base * 2**(n-1)`` seconds (at
    most ``limit``); its messages meanwhile fail at once with :class:`ActorFailedError`, so a
    broken aggregate does not hammer the store while the runtime serves the others.
    """

    #: seconds after the first failure
    base: float = 0.05
    #: the longest wait, in seconds
    limit: float = 5.0
    #: the clock the waits are measured on (seconds; tests pass one they move by hand)
    clock: Callable[[], float] = time.monotonic

    def __attrs_post_init__(self) -> None:
        for name, value in (("base", self.base), ("limit", self.limit)):
            check_seconds(f"Backoff: {name}", value, zero=True)

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failures in a row (``failures >= 1``)."""
        return float(min(self.base * 2 ** (failures - 1), self.limit))


def snapshot_policy(
    snapshot: SnapshotPolicy | None, snapshot_every: int | None
) -> SnapshotPolicy | None:
    """The snapshot policy given as a value, or made from the ``snapshot_every`` keyword."""
    if snapshot is None:
        return SnapshotEvery(snapshot_every) if snapshot_every is not None else None
    if not isinstance(snapshot, SnapshotEvery | SnapshotInterval):
        msg = f"snapshot must be a SnapshotEvery or a SnapshotInterval, got {snapshot!r}"
        raise TypeError(msg)
    if snapshot_every is not None:
        msg = "give snapshot= or snapshot_every=, not both"
        raise ValueError(msg)
    return snapshot


def passivation_policy(
    passivation: Passivation | None, passivate_after: float | None, max_active: int | None
) -> Passivation:
    """The passivation policy given as a value, or made from the keywords it replaces."""
    if passivation is None:
        check_seconds("passivate_after", passivate_after, zero=True, optional=True)
        return Passivation(idle_after=passivate_after, max_active=max_active)
    if not isinstance(passivation, Passivation):
        msg = f"passivation must be a Passivation, got {passivation!r}"
        raise TypeError(msg)
    if passivate_after is not None or max_active is not None:
        msg = "give passivation= or passivate_after=/max_active=, not both"
        raise ValueError(msg)
    return passivation


def check_optional_positive(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        msg = f"{name} must be an int >= 1 or None, got {value!r}"
        raise ValueError(msg)


def check_runtime_options(
    *,
    supervision: Backoff | None,
    mailbox_size: int,
    max_batch: int,
    max_activations: int,
    activation_timeout: float | None,
    max_conflict_retries: int,
    idempotency_window: int,
    ask_timeout: float | None,
    shutdown_timeout: float | None,
) -> None:
    """Refuse a runtime option out of its range, naming it (before anything is made)."""
    if supervision is not None and not isinstance(supervision, Backoff):
        msg = f"supervision must be a Backoff, got {supervision!r}"
        raise TypeError(msg)
    check_optional_positive("mailbox_size", mailbox_size)
    check_optional_positive("max_batch", max_batch)
    check_optional_positive("max_activations", max_activations)
    check_seconds("activation_timeout", activation_timeout, optional=True)
    if (
        not isinstance(max_conflict_retries, int)
        or isinstance(max_conflict_retries, bool)
        or max_conflict_retries < 0
    ):
        msg = f"max_conflict_retries must be an int >= 0, got {max_conflict_retries!r}"
        raise ValueError(msg)
    if (
        not isinstance(idempotency_window, int)
        or isinstance(idempotency_window, bool)
        or idempotency_window < 0
    ):
        msg = f"idempotency_window must be an int >= 0, got {idempotency_window!r}"
        raise ValueError(msg)
    check_seconds("ask_timeout", ask_timeout, optional=True)
    check_seconds("shutdown_timeout", shutdown_timeout, zero=True, optional=True)
