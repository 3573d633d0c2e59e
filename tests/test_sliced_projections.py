"""Sliced projections: one projection's work split by a stable hash of the stream id, each slice
its own instance, runner and checkpoint; and gates that start and stop one of them on demand."""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

import anyio
import pytest

from actorsource import (
    DefinitionError,
    EventStore,
    InMemoryEventStore,
    Projection,
    ProjectionContext,
    ProjectionSlice,
    ResetContext,
    Runtime,
    WaitTimeoutError,
    handle,
    slice_of,
)

from .domain import Account, Deposit, Deposited


class SlicedDeposits(Projection):
    """Durable (its checkpoint is stored): records each position it handled, by stream."""

    name = "deposits"
    durable = True

    def __init__(self, part: ProjectionSlice) -> None:
        self.part = part
        self.seen: list[tuple[str, int]] = []

    @handle
    def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        self.seen.append((ctx.record.stream_id, ctx.record.position))


class CountingDeposits(Projection):
    """Exactly-once: what it counted is committed with its checkpoint."""

    name = "counting"
    mode: ClassVar[Any] = "exactly_once"

    def __init__(self, part: ProjectionSlice) -> None:
        self.part = part
        self.positions: list[int] = []

    @handle
    def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        self.positions.append(ctx.record.position)


async def _deposit(runtime: Runtime, accounts: int, each: int) -> int:
    """Deposit into accounts acc-0.. one at a time; return the last position."""
    last = 0
    for _ in range(each):
        for a in range(accounts):
            recorded = await runtime.ref(Account, f"acc-{a}").ask(Deposit(1))
            last = recorded[-1].position
    return last


def test_slice_of_is_a_stable_md5_hash_of_the_stream_id() -> None:
    # fixed values: the hash must never change (checkpoints and leases depend on it)
    assert [slice_of(f"Account-acc-{n}", 1024) for n in range(4)] == [
        _md5_slice(f"Account-acc-{n}", 1024) for n in range(4)
    ]
    assert slice_of("Account-acc-0", 8) == _md5_slice("Account-acc-0", 8)
    assert slice_of("", 4) == 0xD41D8CD9 % 4  # md5("") starts d41d8cd9
    assert {slice_of(f"s-{n}", 4) for n in range(100)} == {0, 1, 2, 3}


def _md5_slice(stream_id: str, count: int) -> int:
    import hashlib

    return int(hashlib.md5(stream_id.encode()).hexdigest()[:8], 16) % count


async def test_postgresql_computes_the_same_slice_as_python(postgres_dsn: str) -> None:
    import asyncpg

    streams = [f"Account-acc-{n}" for n in range(50)] + ["", "ünï-çødé ✓"]
    connection = await asyncpg.connect(postgres_dsn)
    try:
        rows = await connection.fetch(
            "SELECT s, (('x' || left(md5(s), 8))::bit(32)::bigint % 7)::int AS slice "
            "FROM unnest($1::text[]) AS s",
            streams,
        )
    finally:
        await connection.close()
    assert {row["s"]: row["slice"] for row in rows} == {s: slice_of(s, 7) for s in streams}


async def test_each_slice_handles_only_its_streams_once_under_its_own_checkpoint(
    store: EventStore,
) -> None:
    made: list[SlicedDeposits] = []

    def factory(part: ProjectionSlice) -> SlicedDeposits:
        made.append(SlicedDeposits(part))
        return made[-1]

    async with Runtime(store) as runtime:
        runtime.add_projection(factory, slices=3, batch_size=4)
        head = await _deposit(runtime, accounts=7, each=3)
        await runtime.wait_for_projection("deposits", head)

    assert [view.part for view in made] == [ProjectionSlice(i, 3) for i in range(3)]
    for view in made:
        assert all(slice_of(stream, 3) == view.part.index for stream, _ in view.seen)
    positions = [position for view in made for _, position in view.seen]
    assert sorted(positions) == list(range(1, head + 1))  # every event once, in one slice
    checkpoints = await store.list_checkpoints()
    assert checkpoints == {f"deposits:slice:{i}/3": head for i in range(3)}


async def test_an_exactly_once_sliced_projection_commits_each_slice_with_its_checkpoint(
    store: EventStore,
) -> None:
    if store.capabilities().transactional is None:
        pytest.skip("the store has no transactions")
    made: list[CountingDeposits] = []

    def factory(part: ProjectionSlice) -> CountingDeposits:
        made.append(CountingDeposits(part))
        return made[-1]

    async with Runtime(store) as runtime:
        runtime.add_projection(factory, slices=2, batch_size=3)
        head = await _deposit(runtime, accounts=5, each=2)
        await runtime.wait_for_projection(CountingDeposits)
    counts = Counter(position for view in made for position in view.positions)
    assert sorted(counts) == list(range(1, head + 1))
    assert set(counts.values()) == {1}
    assert await store.list_checkpoints() == {
        "counting:slice:0/2": head,
        "counting:slice:1/2": head,
    }


class Stuck(Projection):
    """Fails on one stream, so that its slice stands still."""

    name = "stuck"

    def __init__(self, part: ProjectionSlice) -> None:
        self.part = part

    @handle
    def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        if ctx.record.stream_id == "Account-acc-0":
            raise ValueError("cannot handle acc-0")


async def test_a_wait_waits_for_every_slice_and_statuses_and_health_name_each() -> None:
    store = InMemoryEventStore()
    async with Runtime(store) as runtime:
        runtime.add_projection(Stuck, slices=2)
        head = await _deposit(runtime, accounts=1, each=1)
        stuck = f"stuck:slice:{slice_of('Account-acc-0', 2)}/2"
        with pytest.raises(WaitTimeoutError) as caught:
            await runtime.wait_for_projection(Stuck, head, timeout=0.3)
        statuses = {s.name: s for s in runtime.statistics().projections}
        health = await runtime.health()

    assert f"projection {stuck!r}" in str(caught.value)
    assert "cannot handle acc-0" in str(caught.value)
    assert set(statuses) == {"stuck:slice:0/2", "stuck:slice:1/2"}
    assert {s.slice for s in statuses.values()} == {ProjectionSlice(0, 2), ProjectionSlice(1, 2)}
    checks = {c.name: c.ok for c in health.checks if c.name.startswith("projection")}
    other = "stuck:slice:1/2" if stuck.endswith("0/2") else "stuck:slice:0/2"
    assert checks == {f"projection {stuck}": False, f"projection {other}": True}


class InMemorySliced(SlicedDeposits):
    """In memory: built again from the start, so a rebuild makes a fresh instance."""

    name = "in-memory"
    durable = False


async def test_one_slice_is_read_and_rebuilt_by_its_name_with_the_slice_factory() -> None:
    made: list[InMemorySliced] = []

    def factory(part: ProjectionSlice) -> InMemorySliced:
        made.append(InMemorySliced(part))
        return made[-1]

    async with Runtime(InMemoryEventStore()) as runtime:
        runtime.add_projection(factory, slices=2)
        head = await _deposit(runtime, accounts=4, each=1)
        await runtime.wait_for_projection("in-memory", head)
        with pytest.raises(LookupError, match=r"split into 2 slices.*'in-memory:slice:0/2'"):
            runtime.projection("in-memory")
        with pytest.raises(LookupError, match=r"split into 2 slices"):
            await runtime.rebuild_projection(InMemorySliced)
        assert runtime.projection("in-memory:slice:1/2") is made[1]
        fresh = await runtime.rebuild_projection("in-memory:slice:1/2")
        assert runtime.projection("in-memory:slice:1/2") is fresh

    assert len(made) == 3
    assert fresh is made[2]
    assert made[2].part == ProjectionSlice(1, 2)
    assert made[2].seen == made[1].seen != []


async def test_a_plain_projection_cannot_take_a_slice_checkpoint_name() -> None:
    class Impostor(Projection):
        name = "deposits:slice:0/2"

        @handle
        def deposited(self, event: Deposited) -> None:
            pass

    with pytest.raises(DefinitionError, match=r"must not end with ':slice:INDEX/COUNT'"):
        Runtime(InMemoryEventStore()).add_projection(Impostor())


class InlineSliced(Projection):
    name = "inline-sliced"
    mode: ClassVar[Any] = "inline"

    def __init__(self, part: ProjectionSlice) -> None:
        pass

    @handle
    def deposited(self, event: Deposited) -> None:
        pass


class Other(Projection):
    name = "other"

    def __init__(self, part: ProjectionSlice) -> None:
        pass

    @handle
    def deposited(self, event: Deposited) -> None:
        pass


@pytest.mark.parametrize(
    ("projection", "slices", "error", "match"),
    [
        (SlicedDeposits, 0, ValueError, r"slices must be an int from 1 to 1024, got 0"),
        (SlicedDeposits, True, ValueError, r"slices must be an int from 1 to 1024, got True"),
        (SlicedDeposits, 1025, ValueError, r"got 1025"),
        (SlicedDeposits(ProjectionSlice(0, 1)), 2, TypeError, r"a factory making each slice"),
        (lambda part: object(), 2, TypeError, r"not a Projection"),
        (InlineSliced, 2, DefinitionError, r"is inline.*slices would not split its work"),
        (
            lambda part: SlicedDeposits(part) if part.index == 0 else Other(part),
            2,
            DefinitionError,
            r"'deposits' projection for slice 0 but a 'other' one for slice 1",
        ),
    ],
)
async def test_a_bad_sliced_projection_is_refused_and_nothing_is_added(
    projection: Any, slices: Any, error: type[Exception], match: str
) -> None:
    runtime = Runtime(InMemoryEventStore())
    with pytest.raises(error, match=match):
        runtime.add_projection(projection, slices=slices)
    assert runtime.statistics().projections == ()


async def test_a_factory_without_slices_and_a_second_projection_of_one_name_are_refused() -> None:
    runtime = Runtime(InMemoryEventStore())
    with pytest.raises(DefinitionError, match=r"give a factory taking a ProjectionSlice"):
        runtime.add_projection(SlicedDeposits)  # type: ignore[call-overload]
    runtime.add_projection(SlicedDeposits, slices=2)
    with pytest.raises(ValueError, match=r"named 'deposits' was already added"):
        runtime.add_projection(SlicedDeposits, slices=3)
    with pytest.raises(ValueError, match=r"named 'deposits' was already added"):
        runtime.add_projection(SlicedDeposits(ProjectionSlice(0, 1)))


# -- gates: start and stop one projection or slice on demand ------------------------------------


async def test_a_gated_slice_waits_closed_stops_when_closed_and_resumes_from_its_checkpoint(
    store: EventStore,
) -> None:
    made: list[SlicedDeposits] = []

    def factory(part: ProjectionSlice) -> SlicedDeposits:
        made.append(SlicedDeposits(part))
        return made[-1]

    async with Runtime(store, poll_interval=0.05) as runtime:
        hosting = runtime._hosting
        hosting.gate()
        runtime.add_projection(factory, slices=2, batch_size=2)
        assert [(g.name, g.running) for g in hosting.gated_entries()] == [
            ("deposits:slice:0/2", False),
            ("deposits:slice:1/2", False),
        ]
        first = await _deposit(runtime, accounts=6, each=1)
        assert [s.state for s in runtime.statistics().projections] == ["standby", "standby"]
        assert made[0].seen == made[1].seen == []

        await hosting.open_gate("deposits:slice:0/2")
        await hosting.open_gate("deposits:slice:1/2")
        await runtime.wait_for_projection("deposits", first)
        await hosting.close_gate("deposits:slice:0/2")
        assert runtime.statistics().projections[0].state == "standby"

        second = await _deposit(runtime, accounts=6, each=1)
        await runtime.wait_for_projection("deposits:slice:1/2", second)
        # the closed slice is judged by its stored checkpoint: behind
        with pytest.raises(WaitTimeoutError, match=r"'deposits:slice:0/2'.*state standby"):
            await runtime.wait_for_projection("deposits", second, timeout=0.2)
        assert max((p for _, p in made[0].seen), default=0) <= first

        await hosting.open_gate("deposits:slice:0/2")
        await runtime.wait_for_projection("deposits", second)

    positions = Counter(position for view in made for _, position in view.seen)
    assert sorted(positions) == list(range(1, second + 1))
    assert set(positions.values()) == {1}  # a durable slice resumed where it stopped


async def test_a_wait_judges_a_slice_run_by_another_runtime_by_its_stored_checkpoint() -> None:
    store = InMemoryEventStore()
    async with Runtime(store, poll_interval=0.02) as here, Runtime(store) as there:
        here._hosting.gate()
        here.add_projection(SlicedDeposits, slices=2)
        there.add_projection(SlicedDeposits, slices=2)  # runs both: ungated
        head = await _deposit(there, accounts=4, each=2)

        with anyio.fail_after(10):
            await here.wait_for_projection("deposits", head)
        assert {s.position for s in here.statistics().projections} == {head}
        assert {s.state for s in here.statistics().projections} == {"standby"}


async def test_an_unknown_gate_is_named_in_the_error() -> None:
    runtime = Runtime(InMemoryEventStore())
    runtime._hosting.gate()
    runtime.add_projection(SlicedDeposits, slices=1)
    with pytest.raises(LookupError, match=r"no gated projection or slice named 'nope'.*0/1"):
        await runtime._hosting.open_gate("nope")


async def test_a_gate_holds_neither_inline_projections_nor_read_models_in_memory() -> None:
    class Inline(Projection):
        name = "inline"
        mode: ClassVar[Any] = "inline"

        @handle
        def deposited(self, event: Deposited) -> None:
            pass

    in_memory: list[InMemorySliced] = []

    def factory(part: ProjectionSlice) -> InMemorySliced:
        in_memory.append(InMemorySliced(part))
        return in_memory[-1]

    async with Runtime(InMemoryEventStore()) as runtime:
        runtime._hosting.gate()
        runtime.add_projection(Inline())
        runtime.add_projection(factory, slices=2)
        runtime.add_projection(SlicedDeposits, slices=2)
        gated = {g.name for g in runtime._hosting.gated_entries()}
        head = await _deposit(runtime, accounts=3, each=1)
        await runtime.wait_for_projection("inline", head)
        await runtime.wait_for_projection("in-memory", head)

    assert gated == {"deposits:slice:0/2", "deposits:slice:1/2"}
    assert sorted(p for view in in_memory for _, p in view.seen) == list(range(1, head + 1))


class Rebuilt(Projection):
    """A durable read model whose handler (or reset) can be held, to act mid-rebuild."""

    durable: ClassVar[bool | None] = True

    def __init__(self) -> None:
        self.seen: list[int] = []
        #: where to wait for ``release``: "handler", "reset" or nowhere (None)
        self.hold: str | None = None
        self.entered = anyio.Event()
        self.release = anyio.Event()

    @handle
    async def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        if self.hold == "handler":
            self.entered.set()
            await self.release.wait()
        self.seen.append(ctx.record.position)

    async def reset(self, ctx: ResetContext) -> None:
        if self.hold == "reset":
            self.entered.set()
            await self.release.wait()
        self.seen.clear()


async def test_a_gate_does_not_close_under_a_rebuild_and_one_task_runs_after_it() -> None:
    with anyio.fail_after(10):  # a second task on one runner kept the runtime from closing
        async with Runtime(InMemoryEventStore(), poll_interval=0.05) as runtime:
            hosting = runtime._hosting
            hosting.gate()
            serving = Rebuilt()
            runtime.add_projection(serving)
            first = await _deposit(runtime, accounts=3, each=1)
            await hosting.open_gate("Rebuilt")
            await runtime.wait_for_projection(Rebuilt, first)
            fresh = Rebuilt()
            fresh.hold = "handler"
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: runtime.rebuild_projection(Rebuilt, factory=lambda: fresh))
                await fresh.entered.wait()  # the rebuild is under way
                with pytest.raises(ValueError, match="being rebuilt here; close its gate"):
                    await hosting.close_gate("Rebuilt")
                assert [g.running for g in hosting.gated_entries()] == [True]
                fresh.hold = None
                fresh.release.set()
            await hosting.close_gate("Rebuilt")  # now it closes
            assert runtime.statistics().projections[0].state == "standby"
            await hosting.open_gate("Rebuilt")
            second = await _deposit(runtime, accounts=3, each=1)
            await runtime.wait_for_projection(Rebuilt, second)
    assert runtime.projection(Rebuilt) is fresh
    assert fresh.seen == list(range(1, second + 1))  # each event once


async def test_a_gate_closed_during_a_rebuild_in_place_keeps_the_projection_on_standby() -> None:
    with anyio.fail_after(10):
        async with Runtime(InMemoryEventStore(), poll_interval=0.05) as runtime:
            hosting = runtime._hosting
            hosting.gate()
            view = Rebuilt()
            runtime.add_projection(view)
            first = await _deposit(runtime, accounts=3, each=1)
            await hosting.open_gate("Rebuilt")
            await runtime.wait_for_projection(Rebuilt, first)
            view.hold = "reset"
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: runtime.rebuild_projection(Rebuilt))
                await view.entered.wait()  # its reset is under way (the lease is lost now)
                await hosting.close_gate("Rebuilt")
                view.hold = None
                view.release.set()
            # the rebuild did not start it again behind the closed gate
            assert runtime.statistics().projections[0].state == "standby"
            assert [g.running for g in hosting.gated_entries()] == [False]
            await hosting.open_gate("Rebuilt")
            second = await _deposit(runtime, accounts=3, each=1)
            await runtime.wait_for_projection(Rebuilt, second)
    assert view.seen == list(range(1, second + 1))  # each event once, after the reset
