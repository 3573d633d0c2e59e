"""Aggregates shared by the tests (module level, so that annotations resolve)."""

from __future__ import annotations

from typing import Any

import attrs

from actorsource import Aggregate, Rejected, apply, command


@attrs.frozen
class Deposit:
    amount: int


@attrs.frozen
class Withdraw:
    amount: int


@attrs.frozen
class Noop:
    pass


@attrs.frozen
class Deposited:
    amount: int


@attrs.frozen
class Withdrew:
    amount: int


@attrs.define
class Account(Aggregate):
    balance: int = 0
    history: list[int] = attrs.Factory(list)

    @command
    def deposit(self, cmd: Deposit) -> Deposited:
        if cmd.amount <= 0:
            raise Rejected(f"deposit must be positive, got {cmd.amount}")
        return Deposited(cmd.amount)

    @command
    def withdraw(self, cmd: Withdraw) -> Withdrew:
        if cmd.amount > self.balance:
            raise Rejected(f"insufficient funds: balance {self.balance}, asked {cmd.amount}")
        return Withdrew(cmd.amount)

    @command
    def noop(self, cmd: Noop) -> None:
        return None

    @apply
    def deposited(self, event: Deposited) -> None:
        self.balance += event.amount
        self.history.append(event.amount)

    @apply
    def withdrew(self, event: Withdrew) -> None:
        self.balance -= event.amount
        self.history.append(-event.amount)


# -- commands and events for aggregates that misbehave on purpose (runtime and bad-input tests)


class Opaque:
    """Not something cattrs or JSON can encode."""

    def __repr__(self) -> str:
        return "<Opaque>"


@attrs.frozen
class Poke:
    pass


@attrs.frozen
class Poked:
    pass


@attrs.frozen
class Attach:
    pass


@attrs.frozen
class Attached:
    # typed Any: a field typed Opaque is refused when the aggregate is first used, and these
    # tests are about a value that cannot be encoded reaching the codec
    thing: Any


@attrs.frozen
class Misbehave:
    returned: Any
