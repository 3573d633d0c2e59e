"""Time travel: an aggregate's state at a version or a time, from the nearest snapshot."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from actorsource import (
    EventStore,
    NaiveDatetimeError,
    Rejected,
    Runtime,
    SnapshotRecord,
    VersionNotReachedError,
)
from actorsource.testing import given

from .domain import Account, Deposit, Withdraw


async def _random_history(runtime: Runtime, seed: int, commands: int) -> list[object]:
    """Ask random deposits and withdrawals; return the events stored, in order."""
    rng = random.Random(seed)
    ref = runtime.ref(Account, "a")
    events: list[object] = []
    for _ in range(commands):
        amount = rng.randint(1, 50)
        command = Deposit(amount) if rng.random() < 0.6 else Withdraw(amount)
        try:
            recorded = await ref.ask(command)
        except Rejected:
            continue
        events.extend(r.event for r in recorded)
    return events


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_state_at_every_version_matches_a_replay_to_that_version(
    store: EventStore, seed: int
) -> None:
    async with Runtime(store, snapshot_every=4) as runtime:
        events = await _random_history(runtime, seed, commands=40)
        assert len(events) > 10

        for version in range(len(events) + 1):
            state = await runtime.state_at(Account, "a", version=version)
            assert state == given(Account, *events[:version]).state, f"version {version}"


async def test_state_at_uses_the_nearest_snapshot_at_or_before_the_version(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        for amount in (1, 2, 3, 4):
            await ref.ask(Deposit(amount))
        # a snapshot whose state no replay could give: it shows where the replay started
        await store.save_snapshot(
            SnapshotRecord("Account-a", 2, {"state": {"balance": 1000, "history": []}})
        )

        assert (await runtime.state_at(Account, "a", version=1)).balance == 1
        assert (await runtime.state_at(Account, "a", version=2)).balance == 1000
        assert (await runtime.state_at(Account, "a", version=4)).balance == 1007
        assert (await ref.state()).balance == 10  # the live actor is not involved


async def test_state_at_a_time_is_the_state_after_the_events_recorded_by_then(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        before = datetime.now(UTC) - timedelta(seconds=1)
        ref = runtime.ref(Account, "a")
        times = []
        for amount in (5, 7, 11):
            (recorded,) = await ref.ask(Deposit(amount))
            times.append(recorded.recorded_at)

        assert (await runtime.state_at(Account, "a", at=before)).balance == 0
        for index, moment in enumerate(times):
            expected = sum(
                amount for amount, t in zip((5, 7, 11), times, strict=True) if t <= moment
            )
            assert (await runtime.state_at(Account, "a", at=moment)).balance == expected, index
        assert (await runtime.state_at(Account, "a", at=datetime.now(UTC))).balance == 23


async def test_state_at_of_a_version_not_reached_yet_names_the_stream_and_its_version(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        await runtime.ref(Account, "a").ask(Deposit(1))

        with pytest.raises(VersionNotReachedError, match="'Account-a' is at version 1") as info:
            await runtime.state_at(Account, "a", version=2)
        with pytest.raises(ValueError, match="exactly one of version= and at="):
            await runtime.state_at(Account, "a")
        with pytest.raises(ValueError, match="version must be an int >= 0, got -1"):
            await runtime.state_at(Account, "a", version=-1)
        assert await runtime.state_at(Account, "never", version=0) == Account()
    error = info.value
    assert isinstance(error, ValueError)  # what it was before it had a type of its own
    assert (error.aggregate, error.stream_id) == ("Account", "Account-a")
    assert (error.version, error.current_version) == (2, 1)
    assert str(error) == (
        "Account stream 'Account-a' is at version 1: it has no version 2 yet; ask for a "
        "version from 0 to 1"
    )


async def test_state_at_a_naive_time_is_told_apart_and_names_the_aggregate(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        await runtime.ref(Account, "a").ask(Deposit(1))
        naive = datetime(2024, 1, 2, 3, 4, 5)

        with pytest.raises(NaiveDatetimeError) as info:
            await runtime.state_at(Account, "a", at=naive)
        # the store refuses one by the same type, for whatever asked it
        with pytest.raises(NaiveDatetimeError, match="at must be a timezone-aware datetime"):
            await store.stream_version("Account-a", at=naive)
        aware = await runtime.state_at(Account, "a", at=naive.replace(tzinfo=UTC))
    error = info.value
    assert isinstance(error, ValueError)
    assert (error.argument, error.value, error.stream_id) == ("at", naive, "Account-a")
    assert str(error).startswith(
        "state_at of Account 'Account-a': at must be a timezone-aware datetime, got the naive "
        "datetime.datetime(2024, 1, 2, 3, 4, 5)"
    )
    assert "datetime.now(UTC)" in str(error)
    assert aware == Account()
