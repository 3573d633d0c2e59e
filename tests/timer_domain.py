"""Aggregates that schedule timers, for the timer tests and their worker processes."""

from __future__ import annotations

from datetime import timedelta

import attrs

from actorsource import Aggregate, Cancel, Missed, Rejected, Schedule, apply, command


@attrs.frozen
class Place:
    minutes: int = 15


@attrs.frozen
class Pay:
    pass


@attrs.frozen
class Expire:
    pass


@attrs.frozen
class StartTicking:
    seconds: int
    missed: str = "once"


@attrs.frozen
class Tick:
    pass


@attrs.frozen
class Nudge:
    order: str


@attrs.frozen
class TickLater:
    seconds: float = 5


@attrs.frozen
class Break:
    pass


@attrs.frozen
class Misdirect:
    pass


@attrs.frozen
class Broken:
    pass


@attrs.frozen
class Placed:
    pass


@attrs.frozen
class Paid:
    pass


@attrs.frozen
class Expired:
    pass


@attrs.frozen
class Ticked:
    pass


@attrs.frozen
class Nudged:
    order: str


@attrs.define
class Order(Aggregate):
    """An order that expires unless paid in time."""

    placed: bool = False
    paid: bool = False
    expired: bool = False
    ticks: int = 0

    @command
    def place(self, cmd: Place) -> list[object]:
        if self.placed:
            raise Rejected("already placed")
        return [Placed(), Schedule(Expire(), key="expiry", after=timedelta(minutes=cmd.minutes))]

    @command
    def pay(self, cmd: Pay) -> list[object]:
        if self.expired:
            raise Rejected("expired")
        return [Paid(), Cancel("expiry")]

    @command
    def expire(self, cmd: Expire) -> list[object]:
        if self.paid or self.expired:
            return []
        return [Expired()]

    @command
    def start_ticking(self, cmd: StartTicking) -> Schedule:
        return Schedule(
            Tick(), key="tick", every=timedelta(seconds=cmd.seconds), missed=Missed(cmd.missed)
        )

    @command
    def tick(self, cmd: Tick) -> Ticked:
        return Ticked()

    @command
    def nudge_later(self, cmd: Nudge) -> Schedule:
        return Schedule(cmd, key=f"nudge-{cmd.order}", after=timedelta(seconds=5), to=(Shop, "s"))

    @command
    def tick_later(self, cmd: TickLater) -> Schedule:
        return Schedule(Tick(), key="tick-later", after=timedelta(seconds=cmd.seconds))

    @command
    def break_down(self, cmd: Break) -> list[object]:
        return [Broken(), Schedule(Tick(), key="broken", after=timedelta(seconds=1))]

    @command
    def misdirect(self, cmd: Misdirect) -> Schedule:
        return Schedule(Tick(), key="lost", after=timedelta(seconds=1), to=(Shop, "s"))

    @apply
    def _broken(self, event: Broken) -> None:
        raise RuntimeError("Broken cannot be applied")

    @apply
    def _placed(self, event: Placed) -> None:
        self.placed = True

    @apply
    def _paid(self, event: Paid) -> None:
        self.paid = True

    @apply
    def _expired(self, event: Expired) -> None:
        self.expired = True

    @apply
    def _ticked(self, event: Ticked) -> None:
        self.ticks += 1


@attrs.define
class Shop(Aggregate):
    """Receives commands other aggregates scheduled to it."""

    nudges: list[str] = attrs.Factory(list)

    @command
    def nudge(self, cmd: Nudge) -> Nudged:
        return Nudged(cmd.order)

    @apply
    def _nudged(self, event: Nudged) -> None:
        self.nudges.append(event.order)
