"""Projections in a cluster: each projection and slice is leased to one live member at a time
(rendezvous hashing), renewed with the heartbeat, handed off on a clean stop or when members
change, taken over once a dead member's lease expires; the next holder resumes from the
checkpoint. Several runtimes in one process share one store; time moves by hand."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import anyio
import anyio.abc
import pytest

from actorsource import (
    ClusterError,
    EventStore,
    Projection,
    ProjectionContext,
    ProjectionSlice,
    Runtime,
    handle,
)
from actorsource.cluster._projection_leases import (
    ProjectionLeases,
    lease_namespace,
    pick_member,
)

from .conftest import cluster_tables as tables
from .domain import Account, Deposit, Deposited

CLUSTER = "c"
LEASE = 10.0
#: members are declared dead this long after their last heartbeat (shorter than a lease, so
#: that a test can see a dead member's lease still refuse a takeover)
HEARTBEAT_TTL = 5.0
START = 1_000_000.0


@pytest.fixture
def store(cluster_store: EventStore) -> EventStore:
    return cluster_store


# -- a read model whose rows commit with its checkpoint: counts each event's deliveries ------


class MemoryLedger(Projection):
    name = "ledger"
    mode: ClassVar[Any] = "exactly_once"

    def __init__(self, part: ProjectionSlice | None, book: list[int]) -> None:
        self.book = book

    @handle
    def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        self.book.append(ctx.record.position)  # committed with the checkpoint, in one step


class PostgresLedger(Projection):
    name = "ledger"
    mode: ClassVar[Any] = "exactly_once"

    def __init__(self, part: ProjectionSlice | None, book: list[int]) -> None:
        pass

    @handle
    async def deposited(self, event: Deposited, ctx: ProjectionContext[Any]) -> None:
        await ctx.transaction.execute("INSERT INTO ledger VALUES ($1)", ctx.record.position)


class Ledger:
    """Where the ledger projection's rows are: a list in memory, a table in PostgreSQL."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.book: list[int] = []
        transactions = store.capabilities().transactional
        assert transactions is not None
        self.transactions = transactions
        self.postgres = store.capabilities().async_transactions

    async def create(self) -> None:
        if self.postgres:

            async def work(tx: Any) -> None:
                await tx.execute("CREATE TABLE ledger (position bigint NOT NULL)")

            await self.transactions.commit_with_checkpoint("ledger-setup", 1, work)

    def factory(self, part: ProjectionSlice) -> Projection:
        kind = PostgresLedger if self.postgres else MemoryLedger
        return kind(part, self.book)

    async def positions(self) -> Counter[int]:
        if not self.postgres:
            return Counter(self.book)

        async def work(tx: Any) -> list[Any]:
            return list(await tx.fetch("SELECT position FROM ledger"))

        rows = await self.transactions.commit_with_checkpoint("ledger-read", 1, work)
        return Counter(row["position"] for row in rows)


class Tally(Projection):
    """At-least-once and durable: its checkpoint is stored; it may see an event twice."""

    name = "tally"
    durable = True

    def __init__(self, part: ProjectionSlice | None, seen: list[int]) -> None:
        self.seen = seen

    @classmethod
    def of(cls, part: ProjectionSlice) -> Tally:
        return cls(part, [])

    @handle
    def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        self.seen.append(ctx.record.position)


class PlainTally(Tally):
    """Not sliced: leased whole, as one slice."""

    name = "plain-tally"


# -- members ------------------------------------------------------------------------------------


class Member:
    """A runtime whose projections run only while leased, and its leases."""

    def __init__(self, store: EventStore, member_id: str, add: Callable[[Runtime], None]) -> None:
        self.store = store
        self.member_id = member_id
        self.runtime = Runtime(store, poll_interval=0.02)
        self.runtime._hosting.gate()
        add(self.runtime)
        self.leases = ProjectionLeases(
            self.runtime._hosting,
            tables(store),
            cluster=CLUSTER,
            member_id=member_id,
            lease=LEASE,
        )
        self._stop = anyio.Event()
        self._stopped = anyio.Event()

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Run the runtime in a task of its own (members stop in any order)."""
        try:
            async with self.runtime:
                task_status.started()
                await self._stop.wait()
        finally:
            self._stopped.set()

    async def close(self) -> None:
        self._stop.set()
        await self._stopped.wait()

    async def beat(self, now: float) -> None:
        await tables(self.store).heartbeat(
            CLUSTER, self.member_id, "127.0.0.1:0", now + HEARTBEAT_TTL
        )

    async def tick(self, now: float) -> None:
        live = await tables(self.store).live_members(CLUSTER, now)
        await self.leases.tick([m.member_id for m in live], now)

    async def stop_cleanly(self) -> None:
        await self.leases.stop()
        await tables(self.store).leave(CLUSTER, self.member_id)
        await self.close()

    async def die(self) -> None:
        """Stop as a killed process would: its runners end, its leases and heartbeat stay."""
        await self.close()

    def running(self) -> set[str]:
        return set(self.leases.running())


@contextlib.asynccontextmanager
async def cluster_of(
    store: EventStore, count: int, add: Callable[[Runtime], None]
) -> AsyncIterator[list[Member]]:
    members = [Member(store, f"m{n}", add) for n in range(count)]
    async with anyio.create_task_group() as tg:
        try:
            for member in members:
                await tg.start(member.serve)
            yield members
        finally:
            for member in members:
                await member.close()


async def beat_and_tick(members: list[Member], now: float) -> None:
    """One heartbeat round: every member beats, then every member ticks."""
    for member in members:
        await member.beat(now)
    for member in members:
        await member.tick(now)


async def deposit(store: EventStore, accounts: int, each: int, first: int = 0) -> int:
    async with Runtime(store) as writer:
        last = 0
        for _ in range(each):
            for a in range(first, first + accounts):
                last = (await writer.ref(Account, f"acc-{a}").ask(Deposit(1)))[-1].position
    return last


def slice_names(projection: str, count: int) -> set[str]:
    return {f"{projection}:slice:{i}/{count}" for i in range(count)}


def assert_each_once(positions: Counter[int], head: int) -> None:
    assert [p for p, n in positions.items() if n > 1] == []
    assert sorted(positions) == list(range(1, head + 1))


# -- tests --------------------------------------------------------------------------------------


async def test_each_projection_and_slice_runs_on_exactly_one_live_member(
    store: EventStore,
) -> None:
    ledger = Ledger(store)
    await ledger.create()
    seen: list[int] = []
    plain: list[int] = []

    def add(runtime: Runtime) -> None:
        runtime.add_projection(ledger.factory, slices=4)
        runtime.add_projection(lambda part: Tally(part, seen), slices=1)
        runtime.add_projection(PlainTally(None, plain))

    async with cluster_of(store, 3, add) as members:
        await beat_and_tick(members, START)
        names = slice_names("ledger", 4) | slice_names("tally", 1) | {"plain-tally"}
        running = [m.running() for m in members]
        assert sorted(n for r in running for n in r) == sorted(names)  # each on one member
        live = [m.member_id for m in members]
        for member, held in zip(members, running, strict=True):
            expected = {
                f"ledger:slice:{i}/4"
                for i in range(4)
                if pick_member(lease_namespace(CLUSTER, "ledger"), i, live) == member.member_id
            }
            assert {n for n in held if n.startswith("ledger")} == expected
            states = {s.name: s.state for s in member.runtime.statistics().projections}
            assert {n for n, state in states.items() if state != "standby"} == held

        head = await deposit(store, accounts=8, each=3)
        for member in members:  # each waits for every slice, those elsewhere by checkpoint
            await member.runtime.wait_for_projection("ledger", head, timeout=10)
            await member.runtime.wait_for_projection("tally", head, timeout=10)
            await member.runtime.wait_for_projection(PlainTally, head, timeout=10)
        await beat_and_tick(members, START + 2)  # renewed: nothing moves
        assert [m.running() for m in members] == running

    assert_each_once(await ledger.positions(), head)
    assert sorted(seen) == sorted(plain) == list(range(1, head + 1))


async def test_a_member_that_stops_cleanly_hands_its_slices_over_at_once(
    store: EventStore,
) -> None:
    ledger = Ledger(store)
    await ledger.create()

    async with cluster_of(store, 3, lambda rt: rt.add_projection(ledger.factory, slices=6)) as (
        members
    ):
        await beat_and_tick(members, START)
        first = await deposit(store, accounts=6, each=2)
        await members[0].runtime.wait_for_projection("ledger", first, timeout=10)

        leaving = max(members, key=lambda m: len(m.running()))
        handed = leaving.running()
        assert handed
        await leaving.stop_cleanly()
        assert await tables(store).live_members(CLUSTER, START + 1) != []
        rest = [m for m in members if m is not leaving]
        await beat_and_tick(rest, START + 1)  # long before its lease would have expired
        assert set().union(*(m.running() for m in rest)) == slice_names("ledger", 6)
        epochs = {name: epoch for m in rest for name, epoch in m.leases.running().items()}
        assert {epochs[name] for name in handed} == {2}  # taken over under a new epoch

        second = await deposit(store, accounts=6, each=2, first=6)
        await rest[0].runtime.wait_for_projection("ledger", second, timeout=10)

    assert_each_once(await ledger.positions(), second)


async def test_a_dead_members_slices_are_taken_over_once_its_lease_expires(
    store: EventStore,
) -> None:
    ledger = Ledger(store)
    await ledger.create()

    async with cluster_of(store, 3, lambda rt: rt.add_projection(ledger.factory, slices=6)) as (
        members
    ):
        await beat_and_tick(members, START)
        dead = max(members, key=lambda m: len(m.running()))
        orphaned = dead.running()
        first = await deposit(store, accounts=6, each=2)
        await members[0].runtime.wait_for_projection("ledger", first, timeout=10)
        await dead.die()
        rest = [m for m in members if m is not dead]
        second = await deposit(store, accounts=6, each=2, first=6)

        # declared dead (its heartbeat expired) but its leases still hold: nobody takes them
        await beat_and_tick(rest, START + HEARTBEAT_TTL + 1)
        assert {m.member_id for m in await tables(store).live_members(CLUSTER, START + 6)} == {
            m.member_id for m in rest
        }
        assert set().union(*(m.running() for m in rest)) & orphaned == set()

        await beat_and_tick(rest, START + LEASE + 1)  # its leases expired: taken over
        assert set().union(*(m.running() for m in rest)) == slice_names("ledger", 6)
        await rest[0].runtime.wait_for_projection("ledger", second, timeout=10)

    assert_each_once(await ledger.positions(), second)


async def test_a_paused_member_stops_when_it_finds_its_lease_lost_and_no_event_applies_twice(
    store: EventStore,
) -> None:
    ledger = Ledger(store)
    await ledger.create()

    async with cluster_of(store, 2, lambda rt: rt.add_projection(ledger.factory, slices=4)) as (
        members
    ):
        paused, other = members
        await paused.beat(START)
        await paused.tick(START)  # alone: it takes every slice
        assert paused.running() == slice_names("ledger", 4)
        first = await deposit(store, accounts=4, each=2)
        await paused.runtime.wait_for_projection("ledger", first, timeout=10)

        # it pauses (no heartbeat, no renewal) past its lease, but its runners go on
        await other.beat(START + LEASE + 1)
        await other.tick(START + LEASE + 1)
        assert other.running() == slice_names("ledger", 4)
        second = await deposit(store, accounts=4, each=3, first=4)  # both run the slices now
        await other.runtime.wait_for_projection("ledger", second, timeout=10)

        await paused.tick(START + LEASE + 2)  # it wakes: its leases expired, it stops
        assert paused.running() == set()
        states = {s.state for s in paused.runtime.statistics().projections}
        assert states == {"standby"}

    assert_each_once(await ledger.positions(), second)


async def test_at_least_once_slices_lose_no_event_across_a_hand_off() -> None:
    from actorsource import InMemoryEventStore

    seen: list[int] = []

    def add(runtime: Runtime) -> None:
        runtime.add_projection(lambda part: Tally(part, seen), slices=4, batch_size=3)

    async with InMemoryEventStore() as store, cluster_of(store, 2, add) as members:
        await beat_and_tick(members, START)
        first = await deposit(store, accounts=8, each=2)
        await members[1].runtime.wait_for_projection("tally", first, timeout=10)
        await members[0].stop_cleanly()
        await beat_and_tick(members[1:], START + 1)
        second = await deposit(store, accounts=8, each=2, first=8)
        await members[1].runtime.wait_for_projection("tally", second, timeout=10)

        # at least once: every event handled (a batch in progress at the hand-off may come twice)
        assert set(seen) == set(range(1, second + 1))
        checkpoints = await store.list_checkpoints()
    assert checkpoints == {f"tally:slice:{i}/4": second for i in range(4)}


async def test_a_joining_member_gets_its_share_only_after_the_holder_hands_it_off(
    store: EventStore,
) -> None:
    ledger = Ledger(store)
    await ledger.create()

    async with cluster_of(store, 2, lambda rt: rt.add_projection(ledger.factory, slices=8)) as (
        members
    ):
        old, new = members
        await old.beat(START)
        await old.tick(START)
        assert old.running() == slice_names("ledger", 8)
        first = await deposit(store, accounts=4, each=2)

        await new.beat(START + 1)  # joins
        await new.tick(START + 1)  # its share is still leased to the old member
        assert new.running() == set()
        await old.beat(START + 1)
        await old.tick(START + 1)  # hands off the new member's share
        await new.tick(START + 1)  # and the new member takes it
        live = ["m0", "m1"]
        namespace = lease_namespace(CLUSTER, "ledger")
        share = {f"ledger:slice:{i}/8" for i in range(8) if pick_member(namespace, i, live) == "m1"}
        assert share  # the pick gives each member some of the eight
        assert new.running() == share
        assert old.running() == slice_names("ledger", 8) - share
        second = await deposit(store, accounts=4, each=2, first=4)
        await new.runtime.wait_for_projection("ledger", second, timeout=10)
        assert first < second

    assert_each_once(await ledger.positions(), second)


async def test_members_that_disagree_on_a_slice_count_are_refused(store: EventStore) -> None:
    seen: list[int] = []
    four = Member(store, "m0", lambda rt: rt.add_projection(lambda p: Tally(p, seen), slices=4))
    two = Member(store, "m1", lambda rt: rt.add_projection(lambda p: Tally(p, seen), slices=2))
    async with four.runtime, two.runtime:
        await four.beat(START)
        await two.beat(START)
        await four.tick(START)
        with pytest.raises(
            ClusterError,
            match=r"'tally' is split into 2 slice\(s\) on member 'm1', but cluster 'c' runs it "
            r"in 4: this member does not run it",
        ):
            await two.tick(START)
        await two.tick(START + 1)  # said once; it still runs none of it
        assert two.running() == set()
        assert {s.state for s in two.runtime.statistics().projections} == {"standby"}
        # the refused member still counts as live: its share waits until it is fixed or stops
        namespace = lease_namespace(CLUSTER, "tally")
        picks = {f"tally:slice:{i}/4": pick_member(namespace, i, ["m0", "m1"]) for i in range(4)}
        assert four.running() == {name for name, member in picks.items() if member == "m0"}
        await two.runtime._hosting.close_gate("tally:slice:0/2")  # closed already: no-op
        await two.leases.stop()
        await tables(store).leave(CLUSTER, "m1")
        await four.tick(START + 2)
        assert four.running() == slice_names("tally", 4)


async def test_a_bad_lease_duration_is_refused() -> None:
    from actorsource import InMemoryEventStore

    store = InMemoryEventStore()
    runtime = Runtime(store)
    with pytest.raises(ValueError, match=r"lease must be > 0 seconds, got 0"):
        ProjectionLeases(runtime._hosting, tables(store), cluster="c", member_id="m", lease=0)


class UnreachableTables:
    """The cluster tables of a store that stopped answering (every call fails)."""

    def __getattr__(self, name: str) -> Any:
        async def fail(*args: Any, **kwargs: Any) -> Any:
            raise OSError("connection refused")

        return fail


async def test_a_member_that_cannot_renew_stops_its_slices_when_its_leases_run_out(
    store: EventStore,
) -> None:
    def add(runtime: Runtime) -> None:
        runtime.add_projection(Tally.of, slices=2)
        runtime.add_projection(PlainTally(None, []))

    async with cluster_of(store, 1, add) as members:
        member = members[0]
        await beat_and_tick(members, START)
        every = slice_names("tally", 2) | {"plain-tally"}
        assert member.running() == every
        member.leases._store = UnreachableTables()  # type: ignore[assignment]

        with pytest.raises(OSError, match="connection refused"):
            await member.leases.tick(["m0"], START + LEASE - 1)  # still leased: runs on
        assert member.running() == every
        with pytest.raises(OSError, match="connection refused"):
            await member.leases.tick(["m0"], START + LEASE)  # run out: stopped all the same
        assert member.running() == set()
        assert {s.state for s in member.runtime.statistics().projections} == {"standby"}
