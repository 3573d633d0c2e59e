"""Projections: catch-up then live, checkpoints, delivery modes, failures, rebuild, lag."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import anyio
import attrs
import pytest

from actorsource import (
    Aggregate,
    DefinitionError,
    EventStore,
    NewEvent,
    Projection,
    ProjectionContext,
    ProjectionError,
    Runtime,
    SQLiteEventStore,
    apply,
    command,
    handle,
)

from .domain import Account, Deposit, Deposited, Withdraw, Withdrew


class Balances(Projection):
    """Balances by account, and every position seen (to count gaps and duplicates)."""

    def __init__(self) -> None:
        self.balances: dict[str, int] = {}
        self.positions: list[int] = []

    @handle
    def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        key = ctx.record.stream_id
        self.balances[key] = self.balances.get(key, 0) + event.amount
        self.positions.append(ctx.record.position)

    @handle
    async def withdrew(self, event: Withdrew, ctx: ProjectionContext) -> None:
        key = ctx.record.stream_id
        self.balances[key] = self.balances.get(key, 0) - event.amount
        self.positions.append(ctx.record.position)


class DepositsOnly(Projection):
    def __init__(self) -> None:
        self.seen: list[Any] = []

    @handle
    def deposited(self, event: Deposited) -> None:
        self.seen.append(event)


async def _deposits(runtime: Runtime, accounts: int, each: int) -> None:
    async with anyio.create_task_group() as tg:
        for a in range(accounts):

            async def deposit_all(a: int = a) -> None:
                ref = runtime.ref(Account, f"acc-{a}")
                for n in range(each):
                    await ref.ask(Deposit(n + 1))

            tg.start_soon(deposit_all)


def _assert_once_each(positions: list[int], head: int) -> None:
    counts = Counter(positions)
    assert [p for p, c in counts.items() if c > 1] == []  # no duplicate
    assert sorted(counts) == list(range(1, head + 1))  # no gap


async def test_projection_catches_up_from_existing_events_then_follows_live_writes(
    store: EventStore,
) -> None:
    async with Runtime(store) as writer:
        await _deposits(writer, accounts=5, each=20)  # history written before it exists

    async with Runtime(store, poll_interval=60) as runtime:
        balances = Balances()
        runtime.add_projection(balances, batch_size=7)
        await runtime.wait_for_projection(Balances)
        assert len(balances.positions) == 100

        await _deposits(runtime, accounts=5, each=20)  # live, while it follows
        await runtime.ref(Account, "acc-0").ask(Withdraw(3))
        with anyio.fail_after(10):  # woken by the commits, not by the 60 s poll
            await runtime.wait_for_projection(Balances)

        _assert_once_each(balances.positions, await store.head_position())
        assert balances.balances["Account-acc-0"] == 2 * sum(range(1, 21)) - 3
        assert runtime.statistics().projections[0].lag_events == 0


async def test_projection_reads_only_the_event_types_it_handles(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        await ref.ask(Deposit(5))
        await ref.ask(Withdraw(2))
        await ref.ask(Deposit(1))
        only = DepositsOnly()
        runtime.add_projection(only)
        await runtime.wait_for_projection(DepositsOnly)

        assert only.seen == [Deposited(5), Deposited(1)]
        status = runtime.statistics().projections[0]
        assert (status.position, status.head_position, status.lag_events) == (3, 3, 0)


class DurableDeposits(DepositsOnly):
    """Stands for a read model outside the process (its ``seen`` is the "table")."""

    durable = True


@pytest.mark.parametrize(
    ("projection", "second_sees", "checkpoints"),
    [
        # a durable read model (outside the process) resumes: not redelivered
        (DurableDeposits, [Deposited(2)], {"DurableDeposits": 2}),
        # one in memory comes back whole: built again from the start, no checkpoint stored
        (DepositsOnly, [Deposited(1), Deposited(2)], {}),
    ],
)
async def test_after_a_restart_a_durable_projection_resumes_and_one_in_memory_is_built_again(
    store: EventStore,
    projection: type[DepositsOnly],
    second_sees: list[Deposited],
    checkpoints: dict[str, int],
) -> None:
    instances = []
    for amount in (1, 2):
        async with Runtime(store) as runtime:
            instances.append(projection())
            runtime.add_projection(instances[-1])
            await runtime.ref(Account, "a").ask(Deposit(amount))
            await runtime.wait_for_projection(projection)
            status = runtime.statistics().projections[0]

    assert instances[0].seen == [Deposited(1)]
    assert instances[1].seen == second_sees
    assert (status.position, status.lag_events, status.durable) == (
        2,
        0,
        projection is DurableDeposits,
    )
    assert await store.list_checkpoints() == checkpoints


class Flaky(Projection):
    def __init__(self) -> None:
        self.broken = True
        self.seen: list[int] = []

    @handle
    def deposited(self, event: Deposited) -> None:
        if event.amount == 13 and self.broken:
            raise ValueError("cannot handle 13")
        self.seen.append(event.amount)


async def test_a_failing_handler_stops_at_that_event_reports_it_and_retries(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        for amount in (1, 13, 2):
            await ref.ask(Deposit(amount))
        flaky = Flaky()
        runtime.add_projection(flaky, batch_size=1)

        with anyio.fail_after(10):
            while runtime.statistics().projections[0].state != "failing":  # noqa: ASYNC110
                await anyio.sleep(0.01)  # the projection's own retry timer drives this
        status = runtime.statistics().projections[0]
        assert status.position == 1  # never past the event it did not handle
        assert status.lag_events == 2
        assert status.last_error is not None
        assert "position 2" in status.last_error
        assert "Deposited" in status.last_error
        assert "cannot handle 13" in status.last_error
        failure = next(r for r in caplog.records if r.name == "actorsource.projection")
        assert failure.position == 2  # type: ignore[attr-defined]

        flaky.broken = False  # the bug is fixed: the retry gets through
        with anyio.fail_after(10):
            await runtime.wait_for_projection(Flaky)
        assert flaky.seen == [1, 13, 2]
        assert runtime.statistics().projections[0].last_error is None


class Gate(Projection):
    def __init__(self) -> None:
        self.entered = anyio.Event()  # a handler holds the first batch
        self.open = anyio.Event()
        self.seen = 0

    @handle
    async def deposited(self, event: Deposited) -> None:
        self.entered.set()
        await self.open.wait()
        self.seen += 1


async def test_lag_is_reported_in_events_and_seconds_and_goes_to_zero(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        for n in range(4):
            await runtime.ref(Account, "a").ask(Deposit(n + 1))
        gate = Gate()
        runtime.add_projection(gate, batch_size=2)
        with anyio.fail_after(10):
            await gate.entered.wait()  # the runner read the head and holds its first batch

        behind = runtime.statistics().projections[0]
        assert (behind.position, behind.lag_events) == (0, 4)
        assert behind.lag_seconds > 0
        assert behind.state == "catching_up"

        gate.open.set()
        await runtime.wait_for_projection(Gate)
        caught_up = runtime.statistics().projections[0]
        assert (caught_up.position, caught_up.lag_events, caught_up.lag_seconds) == (4, 0, 0.0)
        assert gate.seen == 4


async def test_rebuild_gives_the_same_read_model_while_the_old_one_serves(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        original = Balances()
        runtime.add_projection(original)
        await _deposits(runtime, accounts=3, each=10)
        await runtime.wait_for_projection(Balances)

        rebuilt = await runtime.rebuild_projection(Balances)
        assert runtime.projection(Balances) is rebuilt
        assert rebuilt is not original
        assert isinstance(rebuilt, Balances)
        assert rebuilt.balances == original.balances
        assert rebuilt.positions == original.positions

        await runtime.ref(Account, "acc-9").ask(Deposit(4))  # the rebuilt one goes on live
        await runtime.wait_for_projection(Balances)
        assert rebuilt.balances["Account-acc-9"] == 4
        _assert_once_each(rebuilt.positions, await store.head_position())


async def test_rebuild_from_a_later_position_skips_what_is_before_it(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        runtime.add_projection(DepositsOnly())
        for n in range(5):
            await runtime.ref(Account, "a").ask(Deposit(n + 1))
        rebuilt = await runtime.rebuild_projection(DepositsOnly, from_position=4)
        assert isinstance(rebuilt, DepositsOnly)
        assert rebuilt.seen == [Deposited(4), Deposited(5)]


class InlineCount(Projection):
    mode: ClassVar[Any] = "inline"

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}

    @handle
    def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        if event.amount == 666:
            raise ValueError("refusing 666")
        key = ctx.record.stream_id
        self.totals[key] = self.totals.get(key, 0) + event.amount


async def test_inline_projection_is_up_to_date_when_ask_returns(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        ref = runtime.ref(Account, "a")
        await ref.ask(Deposit(2))  # before the projection: caught up when it starts
        view = InlineCount()
        runtime.add_projection(view)
        await runtime.wait_for_projection(InlineCount)
        assert view.totals == {"Account-a": 2}

        for amount in (3, 4):
            await ref.ask(Deposit(amount))
            assert view.totals["Account-a"] == sum(range(2, amount + 1))  # no waiting


async def test_a_failing_inline_handler_fails_the_command_and_stores_nothing(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        view = InlineCount()
        runtime.add_projection(view)
        ref = runtime.ref(Account, "a")
        await ref.ask(Deposit(1))
        await runtime.wait_for_projection(InlineCount)

        with pytest.raises(ProjectionError, match=r"'InlineCount'.*Deposited.*refusing 666") as err:
            await ref.ask(Deposit(666))

        assert err.value.stream_id == "Account-a"
        assert err.value.version == 2
        assert await store.stream_version("Account-a") == 1
        assert (await ref.state()).balance == 1
        await ref.ask(Deposit(5))
        assert view.totals == {"Account-a": 6}


class ExactlyOnceNoop(Projection):
    mode: ClassVar[Any] = "exactly_once"
    name: ClassVar[str | None] = "noop"

    def __init__(self) -> None:
        self.count = 0

    @handle
    def deposited(self, event: Deposited) -> None:
        self.count += 1


async def test_exactly_once_projection_runs_on_every_transactional_store(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        view = ExactlyOnceNoop()
        runtime.add_projection(view, batch_size=3)
        await _deposits(runtime, accounts=2, each=5)
        await runtime.wait_for_projection("noop")
        assert view.count == 10
        assert await store.load_checkpoint("noop") == 10


async def test_projection_sees_other_processes_appends_by_polling(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with (
        Runtime(SQLiteEventStore(path), poll_interval=0.02) as reader,
        Runtime(SQLiteEventStore(path)) as writer,
    ):
        only = DepositsOnly()
        reader.add_projection(only)
        await writer.ref(Account, "a").ask(Deposit(7))
        with anyio.fail_after(10):
            await reader.wait_for_projection(DepositsOnly, position=1)
        assert only.seen == [Deposited(7)]


# -- definitions ---------------------------------------------------------------------------


async def test_a_projection_without_handlers_is_refused() -> None:
    class Empty(Projection):
        pass

    with pytest.raises(DefinitionError, match="Empty has no @handle methods"):
        Runtime(SQLiteEventStore("unused.db")).add_projection(Empty())


async def test_an_async_handler_is_refused_in_a_transactional_mode() -> None:
    class AsyncExactly(Projection):
        mode: ClassVar[Any] = "exactly_once"

        @handle
        async def deposited(self, event: Deposited) -> None:
            pass

    with pytest.raises(DefinitionError, match="is async, but exactly_once handlers"):
        Runtime(SQLiteEventStore("unused.db")).add_projection(AsyncExactly())


async def test_an_unknown_mode_and_a_second_projection_of_one_name_are_refused() -> None:
    class Odd(Projection):
        mode: ClassVar[Any] = "sometimes"

        @handle
        def deposited(self, event: Deposited) -> None:
            pass

    runtime = Runtime(SQLiteEventStore("unused.db"))
    with pytest.raises(DefinitionError, match="mode must be one of"):
        runtime.add_projection(Odd())
    runtime.add_projection(DepositsOnly())
    with pytest.raises(ValueError, match="'DepositsOnly' was already added"):
        runtime.add_projection(DepositsOnly())


async def test_an_unknown_projection_is_named_in_the_error(store: EventStore) -> None:
    async with Runtime(store) as runtime:
        runtime.add_projection(DepositsOnly())
        with pytest.raises(LookupError, match=r"'Nope'.*added: DepositsOnly"):
            runtime.projection("Nope")


# -- exactly-once read models in the store's SQLite file -------------------------------------


class SQLBalances(Projection):
    mode: ClassVar[Any] = "exactly_once"

    @handle
    def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        conn: sqlite3.Connection = ctx.transaction
        conn.execute("CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY, amount INT)")
        conn.execute(
            "INSERT INTO balances VALUES (?, ?) "
            "ON CONFLICT (account) DO UPDATE SET amount = amount + excluded.amount",
            (ctx.record.stream_id, event.amount),
        )


async def test_exactly_once_sql_read_model_commits_with_its_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with Runtime(SQLiteEventStore(path)) as runtime:
        runtime.add_projection(SQLBalances(), batch_size=4)
        await _deposits(runtime, accounts=3, each=5)
        await runtime.wait_for_projection(SQLBalances)

    with sqlite3.connect(path) as conn:
        rows = dict(conn.execute("SELECT account, amount FROM balances").fetchall())
        checkpoint = conn.execute(
            "SELECT position FROM checkpoints WHERE name = 'SQLBalances'"
        ).fetchone()
    assert rows == {f"Account-acc-{a}": 15 for a in range(3)}
    assert checkpoint == (15,)


# -- crashes between the handler and the checkpoint -------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def _project(db: Path, mode: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.workers.projector", str(db), mode, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("mode", "redelivered"),
    # batches of 10: the crash at 25 comes after the checkpoint at 20, so the at-least-once
    # projection handles 21..25 again; the exactly-once one lost them with their transaction
    [("at_least_once", 5), ("exactly_once", 0)],
)
async def test_a_crash_between_handler_and_checkpoint_redelivers_only_at_least_once(
    tmp_path: Path, mode: str, redelivered: int
) -> None:
    db = tmp_path / "events.db"
    async with Runtime(SQLiteEventStore(db)) as runtime:
        for n in range(50):
            await runtime.ref(Account, f"acc-{n % 5}").ask(Deposit(1))

    crashed = _project(db, mode, "--crash-at", "25", "--batch-size", "10")
    assert crashed.returncode == 3, crashed.stderr
    finished = _project(db, mode, "--batch-size", "10")
    assert finished.returncode == 0, finished.stderr

    view = db if mode == "exactly_once" else db.with_suffix(".view")
    with sqlite3.connect(view) as conn:
        seen = Counter(row[0] for row in conn.execute("SELECT position FROM seen"))
    assert sorted(seen) == list(range(1, 51))  # nothing lost
    assert sum(count - 1 for count in seen.values()) == redelivered
    assert {p for p, count in seen.items() if count > 1} == (
        set(range(21, 26)) if redelivered else set()
    )


class Forwarder(Projection):
    """A process manager: every deposit to account a is also made to account b."""

    @handle
    async def deposited(self, event: Deposited, ctx: ProjectionContext) -> None:
        if ctx.record.stream_id == "Account-a":
            command_id = f"forward-{ctx.record.event_id}"  # the same on every redelivery
            await ctx.runtime.ref(Account, "b").ask(Deposit(event.amount), command_id=command_id)


async def test_a_redelivered_event_sends_its_command_again_and_it_takes_effect_once(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        runtime.add_projection(Forwarder())
        for amount in (3, 4):
            await runtime.ref(Account, "a").ask(Deposit(amount))
        await runtime.wait_for_projection(Forwarder)
        forwarded = await runtime.ref(Account, "b").state()

        await runtime.rebuild_projection(Forwarder)  # every event delivered a second time
        await runtime.wait_for_projection(Forwarder)

        assert forwarded.balance == 7
        assert (await runtime.ref(Account, "b").state()).balance == 7
        assert await store.stream_version("Account-b") == 2


# -- the log as domain events ----------------------------------------------------------------


async def test_runtime_subscribe_yields_domain_events_of_history_then_live(
    store: EventStore,
) -> None:
    async with Runtime(store, poll_interval=60) as runtime:
        await runtime.ref(Account, "a").ask(Deposit(1))
        await runtime.ref(Account, "a").ask(Withdraw(1))
        seen: list[Any] = []
        caught_up = anyio.Event()

        async def follow() -> None:
            async for record in runtime.subscribe(event_types=[Deposited]):
                seen.append((record.stream_id, record.version, record.event))
                if record.position == 1:
                    caught_up.set()
                if len(seen) == 2:
                    return

        with anyio.fail_after(10):  # woken by the commit, not by the 60 s poll
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                await caught_up.wait()
                await runtime.ref(Account, "b").ask(Deposit(5))

    assert seen == [("Account-a", 1, Deposited(1)), ("Account-b", 1, Deposited(5))]


async def test_runtime_subscribe_filters_by_aggregate_and_stops_at_the_head_unless_live(
    store: EventStore,
) -> None:
    async with Runtime(store) as runtime:
        await runtime.ref(Account, "a").ask(Deposit(2))
        await runtime.ref(Account, "a").ask(Withdraw(1))
        await store.append("Other-1", 0, [NewEvent("x-1", "Unknown", {}, {})])

        found = [r async for r in runtime.subscribe(aggregates=[Account], live=False)]

        assert [type(r.event) for r in found] == [Deposited, Withdrew]
        assert [r.position for r in found] == [1, 2]
        with pytest.raises(ValueError, match="needs event_types= or aggregates="):
            _ = [r async for r in runtime.subscribe(live=False)]


# -- a handler for a base class ------------------------------------------------------------------


@attrs.frozen
class WalletEvent:
    amount: int


@attrs.frozen
class Put(WalletEvent):
    pass


@attrs.frozen
class Took(WalletEvent):
    pass


@attrs.frozen
class PutMoney:
    amount: int


@attrs.define
class Wallet(Aggregate):
    total: int = 0

    @command
    def put(self, cmd: PutMoney) -> list[WalletEvent]:
        return [Put(cmd.amount), Took(1)]

    @apply
    def was_put(self, event: Put) -> None:
        self.total += event.amount

    @apply
    def was_taken(self, event: Took) -> None:
        self.total -= event.amount


class AllWalletEvents(Projection):
    def __init__(self) -> None:
        self.seen: list[type] = []

    @handle
    def any(self, event: WalletEvent) -> None:
        self.seen.append(type(event))


class AllWalletEventsExactlyOnce(AllWalletEvents):
    mode: ClassVar[Any] = "exactly_once"


class AllWalletEventsInline(AllWalletEvents):
    mode: ClassVar[Any] = "inline"


@pytest.mark.parametrize(
    "view", [AllWalletEvents, AllWalletEventsExactlyOnce, AllWalletEventsInline]
)
async def test_a_handler_for_a_base_class_gets_its_subclasses_events_in_every_mode(
    tmp_path: Path, view: type[AllWalletEvents]
) -> None:
    async with Runtime(SQLiteEventStore(tmp_path / "e.db")) as runtime:
        runtime.add_projection(view())
        recorded = await runtime.ref(Wallet, "w").ask(PutMoney(3))
        await runtime.wait_for_projection(view, recorded[-1].position)
        assert runtime.projection(view).seen == [Put, Took]


async def test_a_base_class_handler_reads_subclass_events_a_process_never_registered(
    store: EventStore,
) -> None:
    async with Runtime(store) as writer:
        await writer.ref(Wallet, "w").ask(PutMoney(3))
    async with Runtime(store) as reader:  # a read-side service: no ref to Wallet here
        reader.add_projection(AllWalletEvents())
        await reader.wait_for_projection(AllWalletEvents)
        assert reader.projection(AllWalletEvents).seen == [Put, Took]  # these classes
