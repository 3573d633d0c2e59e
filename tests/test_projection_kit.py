"""The read side of the test kit: given these events, then this read model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs
import pytest

from actorsource import (
    NaiveDatetimeError,
    Projection,
    ProjectionContext,
    ProjectionError,
    handle,
)
from actorsource.testing import ManualClock, given_events, runtime

from .domain import Account, Deposit, Deposited, Withdrew


class Balances(Projection):
    name = "balances"

    def __init__(self) -> None:
        self.by_account: dict[str, int] = {}
        self.seen: list[tuple[str, int, int]] = []

    @handle
    def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        key = ctx.record.stream_id
        self.by_account[key] = self.by_account.get(key, 0) + event.amount
        self.seen.append((key, ctx.record.version, ctx.record.position))

    @handle
    def withdrew(self, event: Withdrew, ctx: ProjectionContext) -> None:
        key = ctx.record.stream_id
        if event.amount > self.by_account.get(key, 0):
            msg = f"{key} withdrew more than it had"
            raise ValueError(msg)
        self.by_account[key] -= event.amount
        self.seen.append((key, ctx.record.version, ctx.record.position))


class Deposits(Projection):
    """Handles deposits only: withdrawals pass it by."""

    def __init__(self) -> None:
        self.count = 0

    @handle
    async def deposited(self, event: Deposited) -> None:
        self.count += 1


@attrs.frozen
class Thanked:
    to: str


class Thanks(Projection):
    """Sends a command for each deposit (through ctx.runtime)."""

    @handle
    async def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        await ctx.runtime.ref(Account, "thanks").ask(Deposit(1))


def test_the_read_model_is_built_from_the_given_events_with_their_places_in_the_log() -> None:
    given = given_events(
        ("Account-a", Deposited(10)),
        ("Account-b", Deposited(1)),
        ("Account-a", Withdrew(3)),
    )

    projected = given.project(Balances())

    projected.then(lambda balances: balances.by_account, {"Account-a": 7, "Account-b": 1})
    projected.then(lambda balances: "Account-c" not in balances.by_account)
    assert projected.projection.seen == [
        ("Account-a", 1, 1),
        ("Account-b", 1, 2),
        ("Account-a", 2, 3),
    ]
    first = given.records[0]
    assert (first.recorded_at, first.data, first.event_id) == (
        datetime(2024, 1, 1, tzinfo=UTC),
        {"amount": 10},
        "00000000-0000-0000-0000-000000000001",
    )


def test_events_without_a_stream_go_to_one_stream() -> None:
    given_events(Deposited(4), Deposited(5), stream_id="Account-x").project(Balances()).then(
        lambda balances: balances.seen, [("Account-x", 1, 1), ("Account-x", 2, 2)]
    )


def test_a_read_model_that_differs_fails_with_what_it_found() -> None:
    projected = given_events(Deposited(4)).project(Balances())

    with pytest.raises(AssertionError) as caught:
        projected.then(lambda balances: balances.by_account, {"Test-1": 5})
    assert "expected: {'Test-1': 5}\n  actual:   {'Test-1': 4}" in str(caught.value)
    with pytest.raises(AssertionError, match=r"(?s)does not satisfy .*'Test-1': 4"):
        projected.then(lambda balances: not balances.by_account)


def test_a_failing_handler_stops_the_projection_there_as_the_runtime_would() -> None:
    projected = given_events(Deposited(1), Withdrew(5), Deposited(7)).project(Balances())

    error = projected.raises(ProjectionError, match="at position 2")
    assert (error.projection, error.stream_id, error.version) == ("balances", "Test-1", 2)
    cause = projected.raises(ValueError, match="withdrew more than it had")
    assert cause is error.__cause__
    assert projected.projection.by_account == {"Test-1": 1}  # the third event never came
    with pytest.raises(AssertionError, match="cannot check the read model"):
        projected.then(lambda balances: True)
    with pytest.raises(AssertionError, match="was expected to raise"):
        given_events(Deposited(1)).project(Balances()).raises(ProjectionError)


async def test_async_handlers_are_awaited_and_unhandled_types_pass_by() -> None:
    given = given_events(Deposited(1), Withdrew(1), Deposited(2))

    with pytest.raises(TypeError, match="project_async"):
        given.project(Deposits())
    projected = await given.project_async(Deposits())

    projected.then(lambda deposits: deposits.count, 2)


async def test_handlers_send_commands_through_the_runtime_they_are_given() -> None:
    given = given_events(Deposited(1), stream_id="Account-a")

    failed = await given.project_async(Thanks())
    failed.raises(AssertionError, match=r"used ctx.runtime.ref, but the scenario has no runtime")
    async with runtime() as opened:
        await given.project_async(Thanks(), runtime=opened)
        recorded = [e async for e in opened.store.read_stream("Account-thanks")]
    # caused by the given event, as a command sent from a running projection would be
    assert recorded[0].metadata["causation_id"] == given.records[0].event_id


async def test_the_kit_builds_the_read_model_the_runtime_builds() -> None:
    async with runtime() as opened:
        served = Balances()
        opened.add_projection(served)
        for account, amount in [("a", 5), ("b", 2), ("a", 1)]:
            recorded = await opened.ref(Account, account).ask(Deposit(amount))
        await opened.wait_for_projection(Balances, recorded[-1].position, timeout=10)
        log = [
            (e.stream_id, e.event) async for e in opened.subscribe(aggregates=[Account], live=False)
        ]

    given_events(*log).project(Balances()).then(
        lambda balances: (balances.by_account, balances.seen), (served.by_account, served.seen)
    )


def test_a_naive_start_and_a_malformed_pair_are_refused() -> None:
    with pytest.raises(NaiveDatetimeError, match="given_events: start must be a timezone-aware"):
        given_events(Deposited(1), start=datetime(2024, 1, 1))
    bad: Any = ("Account-a", Deposited(1), "extra")
    with pytest.raises(TypeError, match="an event or a \\(stream_id, event\\) pair"):
        given_events(bad)


def test_a_manual_clock_moves_only_forward_and_only_when_told() -> None:
    clock = ManualClock(start=5.0)
    assert clock() == 5.0
    clock.advance(1.5)
    assert clock() == 6.5
    with pytest.raises(ValueError, match="forward only"):
        clock.advance(-1)
