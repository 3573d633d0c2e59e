"""A cluster of runtimes in one process, sharing one store: placement by shard leases,
fencing, hand-off, membership with a lease timeout (an injected clock; rounds run on demand).

Refs here go to the owner's own runtime (found through ``runtime.cluster``); routing between
members over TCP is tested with real processes in ``test_cluster_processes.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, ClassVar

import pytest

from actorsource import (
    Cluster,
    ClusterError,
    FencedError,
    InMemoryEventStore,
    Projection,
    ProjectionContext,
    Runtime,
    SQLiteEventStore,
    handle,
)
from actorsource._refs import AggregateRef
from actorsource.cluster import rendezvous, shard_of
from actorsource.stores._base import EventStore

from .domain import Account, Deposit, Deposited
from .timer_domain import Order, Place, TickLater

SECRET = "s" * 32


class Clock:
    """The cluster's time, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def config(clock: Clock, member: str, *, shards: int = 8, lease: float = 100.0) -> Cluster:
    # a long lease: the background rounds (every lease / 4 seconds) never run in a test;
    # the test runs them with refresh() and moves the clock itself
    return Cluster(
        "c", "127.0.0.1:0", SECRET, shards=shards, lease=lease, clock=clock, member_id=member
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def shared() -> AsyncIterator[EventStore]:
    async with InMemoryEventStore() as store:
        yield store


async def refresh_all(*runtimes: Runtime) -> None:
    # twice: the first round may hand shards off that the second round's members take
    for _ in range(2):
        for runtime in runtimes:
            assert runtime.cluster is not None
            await runtime.cluster.refresh()


def owner_runtime(runtimes: list[Runtime], stream_id: str) -> Runtime:
    found = [
        r
        for r in runtimes
        if r.cluster and r.cluster.shard_of(stream_id) in r.cluster.owned_shards()
    ]
    assert len(found) == 1, f"{stream_id}: owned by {len(found)} members"
    return found[0]


def aggregate_id_owned(runtime: Runtime, category: str, *, owned: bool = True) -> str:
    """The first aggregate id of ``category`` whose shard ``runtime`` owns (or, with
    ``owned=False``, does not own)."""
    cluster = runtime.cluster
    assert cluster is not None
    return next(
        str(i)
        for i in range(100)
        if (cluster.shard_of(f"{category}-{i}") in cluster.owned_shards()) == owned
    )


# -- the value ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": ""}, ValueError, "cluster or member name"),
        ({"address": "localhost"}, ValueError, "'host:port'"),
        ({"address": "localhost:99999"}, ValueError, "port from 0 to 65535"),
        ({"secret": "short"}, ValueError, "at least 16 bytes"),
        ({"secret": 12345}, ValueError, "str or bytes"),
        ({"shards": 0}, ValueError, "shards must be an int from 1"),
        ({"shards": True}, ValueError, "shards must be an int"),
        ({"lease": 0}, ValueError, "lease must be a number of seconds > 0"),
        ({"lease": float("inf")}, ValueError, "lease must be"),
        ({"lease": 1.0, "heartbeat": 2.0}, ValueError, "shorter than lease"),
        ({"clock": 3}, TypeError, "clock must be a callable"),
        ({"tls": "yes"}, TypeError, "tls must be an ssl.SSLContext"),
        ({"member_id": "a\x00b"}, ValueError, "member_id"),
    ],
)
def test_a_bad_cluster_value_is_refused_naming_what_was_wrong(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    args: dict[str, Any] = {"name": "c", "address": "127.0.0.1:0", "secret": SECRET, **kwargs}
    with pytest.raises(error, match=match):
        Cluster(**args)


def test_the_heartbeat_defaults_to_a_quarter_of_the_lease_and_repr_hides_the_secret() -> None:
    value = Cluster("c", "127.0.0.1:7400", SECRET, lease=2.0)
    assert value.interval == 0.5
    assert SECRET not in repr(value)
    assert value.secret_bytes == SECRET.encode()


# -- placement ------------------------------------------------------------------------------------


def test_a_streams_shard_is_stable_across_processes() -> None:
    # fixed values: the hash must not depend on the process (Python's hash() is salted)
    assert shard_of("Account-1", 64) == 18
    assert shard_of("Account-2", 64) == 53
    assert all(0 <= shard_of(f"x-{i}", 7) < 7 for i in range(100))


def test_rendezvous_moves_only_the_shards_of_the_member_that_leaves() -> None:
    members = ["a", "b", "c"]
    before = {s: rendezvous(s, members) for s in range(256)}
    after = {s: rendezvous(s, ["a", "c"]) for s in range(256)}
    moved = {s for s in range(256) if before[s] != after[s]}
    assert moved == {s for s in range(256) if before[s] == "b"}
    assert {before[s] for s in range(256)} == {"a", "b", "c"}  # every member gets some
    assert rendezvous(0, []) is None


# -- the runtime ----------------------------------------------------------------------------------


async def test_a_runtime_on_sqlite_refuses_to_join_a_cluster(tmp_path: Path, clock: Clock) -> None:
    store = SQLiteEventStore(tmp_path / "e.db")
    with pytest.raises(ValueError, match=r"keeps no cluster tables.*PostgresEventStore"):
        Runtime(store, cluster=config(clock, "a"))


async def test_without_a_cluster_nothing_changes(shared: EventStore) -> None:
    async with Runtime(shared) as runtime:
        assert runtime.cluster is None
        assert (await runtime.ref(Account, "1").ask(Deposit(5)))[0].version == 1
        # the actors append through the store's own route, not a fenced one
        assert runtime._context.append_then.__name__ != "append_fenced"


async def test_members_split_the_shards_and_each_owner_serves_its_aggregates(
    shared: EventStore, clock: Clock
) -> None:
    async with AsyncExitStack() as stack:
        runtimes = [
            await stack.enter_async_context(Runtime(shared, cluster=config(clock, m)))
            for m in ("a", "b", "c")
        ]
        await refresh_all(*runtimes)
        owned = [set(r.cluster.owned_shards()) for r in runtimes if r.cluster]
        assert set().union(*owned) == set(range(8))
        assert sum(len(s) for s in owned) == 8  # disjoint
        assert all(owned)
        views = [r.cluster for r in runtimes if r.cluster]
        assert [m.member_id for m in views[0].members()] == ["a", "b", "c"]
        for i in range(20):
            stream = f"Account-{i}"
            owners = {v.owner_of(stream) for v in views}
            assert len(owners) == 1  # every member agrees on the owner
            target = owner_runtime(runtimes, stream)
            events = await target.ref(Account, str(i)).ask(Deposit(i + 1))
            assert events[0].version == 1
        assert sum(r.statistics().conflicts_retried for r in runtimes) == 0


async def test_a_ref_on_any_member_reaches_the_owner_and_a_non_owner_cannot_append(
    shared: EventStore, clock: Clock
) -> None:
    async with (
        Runtime(shared, cluster=config(clock, "a")) as a,
        Runtime(shared, cluster=config(clock, "b")) as b,
    ):
        assert a.cluster is not None and b.cluster is not None
        b.ref(Account, "warm-up")  # the aggregates b serves
        await refresh_all(a, b)
        aggregate_id = aggregate_id_owned(a, "Account", owned=False)
        stream = f"Account-{aggregate_id}"
        # a's actors cannot append to a shard b owns: refused at once, nothing stored
        direct = AggregateRef(
            a._dispatcher, a.ref(Account, aggregate_id).decider, aggregate_id, stream
        )
        with pytest.raises(FencedError, match="holds no lease on shard"):
            await direct.ask(Deposit(1))
        assert await shared.stream_version(stream) == 0
        # a's ref goes to b, over TCP
        events = await a.ref(Account, aggregate_id).ask(Deposit(7))
        assert events[0].version == 1
        assert b._dispatcher.is_live(stream) and not a._dispatcher.is_live(stream)
        assert (await a.ref(Account, aggregate_id).state()).balance == 7


async def test_a_joining_member_gets_its_shards_after_the_owner_hands_them_off(
    shared: EventStore, clock: Clock
) -> None:
    async with Runtime(shared, cluster=config(clock, "a")) as a:
        assert a.cluster is not None
        assert a.cluster.owned_shards() == list(range(8))  # alone: every shard
        refs = {i: a.ref(Account, str(i)) for i in range(16)}
        for ref in refs.values():
            await ref.ask(Deposit(1))
        assert a.statistics().active_actors == 16
        async with Runtime(shared, cluster=config(clock, "b")) as b:
            assert b.cluster is not None
            assert b.cluster.owned_shards() == []  # a holds them all, under live leases
            # commands admitted before the hand-off (in the mailboxes) finish on a
            for ref in refs.values():
                await ref.tell(Deposit(1))
            await a.cluster.refresh()  # a sees b: hands b's shards off
            versions = [await shared.stream_version(ref.stream_id) for ref in refs.values()]
            assert versions == [2] * 16
            await b.cluster.refresh()  # b takes the released shards, at epoch 2
            theirs = set(b.cluster.owned_shards())
            assert theirs and theirs.isdisjoint(a.cluster.owned_shards())
            assert set(a.cluster.owned_shards()) | theirs == set(range(8))
            leases = await shared.capabilities().cluster.shard_leases("c")  # type: ignore[union-attr]
            assert {lease.epoch for lease in leases if lease.shard in theirs} == {2}
            # a passivated the actors of the shards it handed off, none else
            moved = [i for i in refs if b.cluster.shard_of(f"Account-{i}") in theirs]
            assert moved
            assert a.statistics().active_actors == 16 - len(moved)
            for i in moved:
                owner = b.cluster.owner_of(f"Account-{i}")
                assert owner is not None and owner.member_id == "b"
                events = await b.ref(Account, str(i)).ask(Deposit(1))
                assert events[0].version == 3  # b loaded both of a's events
        assert sum(r.statistics().conflicts_retried for r in (a, b)) == 0


async def test_a_member_that_stops_beating_loses_its_shards_and_its_late_appends_are_fenced(
    shared: EventStore, clock: Clock
) -> None:
    async with (
        Runtime(shared, cluster=config(clock, "a")) as a,
        Runtime(shared, cluster=config(clock, "b")) as b,
    ):
        assert a.cluster is not None and b.cluster is not None
        await refresh_all(a, b)
        stream = f"Account-{aggregate_id_owned(a, 'Account')}"
        ref = a.ref(Account, stream.removeprefix("Account-"))
        await ref.ask(Deposit(1))
        shard = a.cluster.shard_of(stream)
        # a pauses (no rounds) for longer than the lease; b beats on and takes a's shards
        clock.now += 150
        assert a.cluster.owned_shards() == []  # by its own clock, a's leases have lapsed
        await b.cluster.refresh()
        assert [m.member_id for m in b.cluster.members()] == ["b"]
        assert shard in b.cluster.owned_shards()
        owner = b.cluster.owner_of(stream)
        assert owner is not None and (owner.member_id, owner.epoch) == ("b", 2)
        # a's actor, still loaded, takes a command admitted before the pause (straight into
        # its mailbox) and tries to append under its old lease: refused, nothing stored
        direct = AggregateRef(a._dispatcher, ref.decider, ref.aggregate_id, stream)
        with pytest.raises(FencedError, match="at epoch 1, but the shard is at epoch 2"):
            await direct.ask(Deposit(100))
        assert await shared.stream_version(stream) == 1
        assert not a._dispatcher.is_live(stream)  # the fenced actor passivated
        assert a.statistics().actor_failures == 1
        b.ref(Account, "warm-up")  # the aggregates b serves
        events = await b.ref(Account, stream.removeprefix("Account-")).ask(Deposit(2))
        assert events[0].version == 2
        # a's own ref now reaches b (a no longer accepts the shard)
        events = await ref.ask(Deposit(3))
        assert events[0].version == 3
        await a.cluster.refresh()  # a comes back as a member, and gets some shards back
        await refresh_all(a, b)
        assert set(a.cluster.owned_shards()) | set(b.cluster.owned_shards()) == set(range(8))


async def test_a_member_leaving_cleanly_hands_off_so_the_others_take_over_at_once(
    shared: EventStore, clock: Clock
) -> None:
    async with Runtime(shared, cluster=config(clock, "a")) as a:
        assert a.cluster is not None
        async with Runtime(shared, cluster=config(clock, "b")) as b:
            await refresh_all(a, b)
            assert b.cluster is not None and b.cluster.owned_shards()
        # no clock moved: the shards are free because b released them and left
        await a.cluster.refresh()
        assert a.cluster.owned_shards() == list(range(8))
        assert [m.member_id for m in a.cluster.members()] == ["a"]


async def test_a_member_with_another_shard_count_is_refused(
    shared: EventStore, clock: Clock
) -> None:
    async with Runtime(shared, cluster=config(clock, "a", shards=8)):
        late = Runtime(shared, cluster=config(clock, "b", shards=16))
        with pytest.raises(ClusterError, match=r"has 8 shards.*use shards=8"):
            await late.__aenter__()
        assert not late._node or late._node.shards.owned == {}


async def test_a_command_fenced_off_on_a_stale_owner_is_retried_on_the_new_owner(
    shared: EventStore, clock: Clock
) -> None:
    paused = Clock()  # a's clock: a was paused, its time stood still
    async with (
        Runtime(shared, cluster=config(paused, "a")) as a,
        Runtime(shared, cluster=config(clock, "b")) as b,
    ):
        assert a.cluster is not None and b.cluster is not None
        b.ref(Account, "warm-up")
        await refresh_all(a, b)
        aggregate_id = next(
            str(i)
            for i in range(100)
            if a.cluster.shard_of(f"Account-{i}") in a.cluster.owned_shards()
        )
        ref = a.ref(Account, aggregate_id)
        await ref.ask(Deposit(1))
        shard = a.cluster.shard_of(ref.stream_id)
        # while a is paused, its lease lapses: b takes its shards over, at the next epoch
        clock.now += 150
        await b.cluster.refresh()
        assert shard in b.cluster.owned_shards()
        assert shard in a.cluster.owned_shards()  # a's view is stale: it still accepts
        # a's actor decides, its append is fenced off; the caller does not see it: the router
        # sends the command (same command id) to b, which stores it once
        events = await ref.ask(Deposit(5), command_id="once")
        assert events[0].version == 2
        assert shard not in a.cluster.owned_shards()
        assert not a._dispatcher.is_live(ref.stream_id)
        assert b._dispatcher.is_live(ref.stream_id)
        stored = [e.data for e in await _read(shared, ref.stream_id)]
        assert stored == [{"amount": 1}, {"amount": 5}]


async def _read(store: EventStore, stream_id: str) -> list[Any]:
    return [event async for event in store.read_stream(stream_id)]


async def test_a_member_serves_the_aggregates_its_cluster_value_names_before_any_ref(
    shared: EventStore, clock: Clock
) -> None:
    named = Cluster(
        "c",
        "127.0.0.1:0",
        SECRET,
        shards=8,
        lease=100.0,
        clock=clock,
        member_id="b",
        aggregates=[Account],
    )
    async with (
        Runtime(shared, cluster=config(clock, "a")) as a,
        Runtime(shared, cluster=named) as b,
    ):
        assert a.cluster is not None and b.cluster is not None
        await refresh_all(a, b)
        aggregate_id = next(
            str(i)
            for i in range(100)
            if b.cluster.shard_of(f"Account-{i}") in b.cluster.owned_shards()
        )
        events = await a.ref(Account, aggregate_id).ask(Deposit(4))
        assert events[0].version == 1 and b._dispatcher.is_live(f"Account-{aggregate_id}")
    with pytest.raises(ValueError, match="aggregates must be a list"):
        Cluster("c", "127.0.0.1:0", SECRET, aggregates="Account")  # type: ignore[arg-type]


class Counted(Projection):
    """A durable read model shared by the members (a list both runtimes' instances append to)."""

    name = "counted"
    mode: ClassVar[Any] = "exactly_once"  # the list is "committed" with the checkpoint

    def __init__(self, seen: list[tuple[str, int]], member: str) -> None:
        self.seen = seen
        self.member = member

    @handle
    def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        self.seen.append((self.member, ctx.record.position))


def running_members(*runtimes: Runtime) -> list[str]:
    return [
        runtime.cluster.member_id
        for runtime in runtimes
        if runtime.cluster is not None
        and any(
            s.name == "counted" and s.state != "standby" for s in runtime.statistics().projections
        )
    ]


async def test_a_clustered_runtime_runs_each_durable_projection_on_one_member_and_hands_it_over(
    shared: EventStore, clock: Clock
) -> None:
    seen: list[tuple[str, int]] = []
    async with Runtime(shared, cluster=config(clock, "a")) as a:
        a.add_projection(Counted(seen, "a"))
        async with Runtime(shared, cluster=config(clock, "b")) as b:
            b.add_projection(Counted(seen, "b"))
            await refresh_all(a, b)
            runners = running_members(a, b)
            assert len(runners) == 1  # one member runs it; the other stands by
            for n in range(10):
                stream = f"Account-acc-{n}"
                owner = owner_runtime([a, b], stream)
                await owner.ref(Account, f"acc-{n}").ask(Deposit(1))
            runner = a if runners == ["a"] else b
            await runner.wait_for_projection("counted")
            assert sorted(position for _, position in seen) == list(range(1, 11))
            assert {member for member, _ in seen} == set(runners)
        # b stopped cleanly: its lease was released; a runs the projection from the checkpoint
        await a.cluster.refresh()  # type: ignore[union-attr]
        assert running_members(a) == ["a"]
        await a.ref(Account, "acc-0").ask(Deposit(1))
        await a.wait_for_projection("counted")
        positions = [position for _, position in seen]
        assert len(positions) == len(set(positions))  # each event handled once
        assert sorted(positions) == list(range(1, 12))


async def test_a_stale_owners_command_that_schedules_a_timer_is_fenced_too(
    shared: EventStore, clock: Clock
) -> None:
    timers = shared.capabilities().timers
    assert timers is not None
    async with (
        Runtime(shared, cluster=config(clock, "a")) as a,
        Runtime(shared, cluster=config(clock, "b")) as b,
    ):
        assert a.cluster is not None and b.cluster is not None
        await refresh_all(a, b)
        stream = f"Order-{aggregate_id_owned(a, 'Order')}"
        ref = a.ref(Order, stream.removeprefix("Order-"))
        await ref.ask(Place(minutes=30))  # events and timer stored under a's lease
        before = [(t.key, t.due_at) for t in await timers.list_timers()]
        assert [key for key, _ in before] == ["expiry"]
        clock.now += 150  # a pauses past its lease; b takes its shards over
        await b.cluster.refresh()
        assert b.cluster.owner_of(stream) is not None
        direct = AggregateRef(a._dispatcher, ref.decider, ref.aggregate_id, stream)
        with pytest.raises(FencedError, match="at epoch 1, but the shard is at epoch 2"):
            await direct.ask(TickLater(60))  # a timer (no event), admitted before the pause
        assert await shared.stream_version(stream) == 1
        assert [(t.key, t.due_at) for t in await timers.list_timers()] == before
