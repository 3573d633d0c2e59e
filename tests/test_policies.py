"""Snapshot, passivation and supervision policies as values, and the supervisor's backoff."""

from __future__ import annotations

import pytest

from actorsource import Backoff, InMemoryEventStore, Passivation, Runtime, SnapshotEvery
from actorsource._supervision import Supervisor
from actorsource.testing import runtime

from .clock import ManualClock
from .domain import Account, Deposit


def test_snapshot_every_is_due_when_an_append_crosses_a_multiple() -> None:
    policy = SnapshotEvery(3)
    assert [policy.due(v, v + 1) for v in range(6)] == [False, False, True, False, False, True]
    assert policy.due(1, 7)  # one append of six events crosses 3 and 6
    assert not policy.due(3, 5)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_snapshot_every_refuses_what_is_not_a_positive_int(bad: object) -> None:
    with pytest.raises(ValueError, match=r"SnapshotEvery: events must be an int >= 1"):
        SnapshotEvery(bad)  # type: ignore[arg-type]  # what is tested


def test_passivation_checks_its_values() -> None:
    assert Passivation() == Passivation(idle_after=None, max_active=None)
    with pytest.raises(ValueError, match="idle_after must be >= 0 seconds"):
        Passivation(idle_after=-1)
    with pytest.raises(ValueError, match="max_active must be an int >= 1"):
        Passivation(max_active=0)


def test_backoff_doubles_from_its_base_up_to_its_limit() -> None:
    policy = Backoff(base=0.05, limit=0.3)
    assert [policy.delay(n) for n in range(1, 6)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    with pytest.raises(ValueError, match="Backoff: base must be >= 0 seconds"):
        Backoff(base=-1)


def test_the_supervisor_waits_out_each_backoff_on_its_clock() -> None:
    clock = ManualClock()
    supervisor = Supervisor(Backoff(base=1.0, limit=3.0, clock=clock))
    supervisor.failed("A-1", "disk full")
    assert supervisor.backoff_left("A-1") == 1.0
    assert supervisor.failures("A-1") == (1, "disk full")
    clock.advance(0.25)
    assert supervisor.backoff_left("A-1") == 0.75
    clock.advance(0.75)
    assert supervisor.backoff_left("A-1") == 0.0
    supervisor.failed("A-1", "still full")
    assert supervisor.backoff_left("A-1") == 2.0  # the second failure in a row: twice as long
    supervisor.failed("A-1", "still full")
    assert supervisor.backoff_left("A-1") == 3.0  # bounded by the limit
    assert supervisor.backoff_left("A-2") == 0.0  # others are not held back
    supervisor.succeeded("A-1")
    assert supervisor.failures("A-1") == (0, "")
    assert supervisor.backoff_left("A-1") == 0.0


async def test_a_snapshot_policy_value_saves_snapshots_as_snapshot_every_does() -> None:
    async with InMemoryEventStore() as store:
        async with Runtime(store, snapshot=SnapshotEvery(2)) as by_value:
            ref = by_value.ref(Account, "a")
            for amount in range(1, 6):
                await ref.ask(Deposit(amount))
        snapshot = await store.load_snapshot("Account-a")  # leaving waited for the saves
    assert snapshot is not None and snapshot.version == 4


async def test_a_passivation_policy_value_limits_the_actors_in_memory() -> None:
    async with runtime(passivation=Passivation(max_active=2)) as limited:
        for name in "abcd":
            await limited.ref(Account, name).ask(Deposit(1))
        stats = limited.statistics()
    assert (stats.active_actors, stats.passivations) == (2, 2)


def test_a_policy_and_the_keywords_it_replaces_are_not_given_together() -> None:
    store = InMemoryEventStore()
    with pytest.raises(ValueError, match="snapshot= or snapshot_every="):
        Runtime(store, snapshot=SnapshotEvery(2), snapshot_every=2)
    with pytest.raises(ValueError, match="passivation= or passivate_after="):
        Runtime(store, passivation=Passivation(max_active=1), max_active=1)
    with pytest.raises(TypeError, match="supervision must be a Backoff"):
        Runtime(store, supervision=0.05)  # type: ignore[arg-type]  # what is tested
    with pytest.raises(TypeError, match="snapshot must be a SnapshotEvery"):
        Runtime(store, snapshot=2)  # type: ignore[arg-type]  # what is tested
