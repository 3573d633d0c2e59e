"""Model-based test: the runtime on a real store behaves like a pure model of the Account.

A hypothesis state machine drives one runtime (then its successors) with asks, tells, bursts of
concurrent sends, state reads, passivation and restarts that change the snapshot interval and the
cap on live actors. After every step, for every aggregate, the runtime's state equals the model's,
the stored stream is exactly the model's list of events (versions 1..N), the store's global log
is gap-free, and any snapshot holds the fold of the events up to its version.

The state machine is sync; the runtime is async. One event loop per example runs one *driver
task* that executes every step: anyio's task group (inside ``Runtime``) must be entered and left
by the same task, and ``run_until_complete(coroutine)`` would give each step a task of its own.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import attrs
import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from actorsource import (
    EventStore,
    InMemoryEventStore,
    PostgresEventStore,
    Rejected,
    Runtime,
    SQLiteEventStore,
    StoredEvent,
)

from .conftest import NO_POSTGRES, POSTGRES_DSN, drop_schema, run_sync
from .domain import Account, Deposit, Noop, Withdraw

T = TypeVar("T")

AGGREGATE_IDS = ["a", "b", "c-3", "ünï'🙂"]
SNAPSHOT_INTERVALS = [None, 1, 2, 3, 5]
#: how long one step may take before the test calls it hung (a deadlock is a failure, not a wait)
STEP_TIMEOUT = 60.0


@attrs.frozen
class ModelEvent:
    """An event as the model expects the store to hold it."""

    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]


@attrs.frozen
class Send:
    """One command of a step: to which aggregate, what, and whether the sender waits."""

    aggregate_id: str
    command: Deposit | Withdraw
    wait: bool  # ask (True) or tell (False)


def fold(events: list[ModelEvent]) -> Account:
    """The pure model of the Account's state: a fold over its events."""
    balance, history = 0, []
    for event in events:
        amount = event.data["amount"]
        signed = amount if event.type == "Deposited" else -amount
        balance += signed
        history.append(signed)
    return Account(balance=balance, history=history)


def decide(command: Deposit | Withdraw, balance: int) -> ModelEvent | None:
    """The pure model of the Account's decisions: the event, or None when it is Rejected."""
    if isinstance(command, Deposit):
        return (
            ModelEvent("Deposited", {"amount": command.amount}, {}) if command.amount > 0 else None
        )
    return (
        ModelEvent("Withdrew", {"amount": command.amount}, {})
        if command.amount <= balance
        else None
    )


def user_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The caller's part of an event's metadata; the ids of a root command are checked here."""
    ids = {key: metadata[key] for key in ("correlation_id", "causation_id", "command_id")}
    # sent from no handler, with no ids given: the command starts its own conversation
    assert len(set(ids.values())) == 1, ids
    return {key: value for key, value in metadata.items() if key not in ids}


async def collect(events: Any) -> list[StoredEvent]:
    return [e async for e in events]


aggregate_ids = st.sampled_from(AGGREGATE_IDS)
commands = st.one_of(
    st.builds(Deposit, st.integers(min_value=-2, max_value=40)),
    st.builds(Withdraw, st.integers(min_value=1, max_value=60)),
)
sends = st.builds(Send, aggregate_ids, commands, st.booleans())


class RuntimeMachine(RuleBasedStateMachine):
    """Drives a runtime on one store; subclasses choose the store."""

    store_kind: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.jobs: asyncio.Queue[tuple[Callable[[], Awaitable[Any]], asyncio.Future[Any]]]
        self.jobs = asyncio.Queue()
        self.driver = self.loop.create_task(self._drive())
        self.directory = tempfile.TemporaryDirectory(prefix="actorsource-model-")
        self.path = Path(self.directory.name) / "events.db"
        #: the model: each aggregate's events in order
        self.model: dict[str, list[ModelEvent]] = {aid: [] for aid in AGGREGATE_IDS}
        #: per aggregate, the least version the latest snapshot must have once the runtime closed
        self.snapshot_floor: dict[str, int] = dict.fromkeys(AGGREGATE_IDS, 0)
        self.snapshot_every: int | None = None
        self.max_active: int | None = None
        self.step = 0
        self.shared_store: EventStore | None = None  # the memory store, open across runtimes
        self.runtime: Runtime | None = None
        self.run(self._start)

    # -- the loop and the driver task ----------------------------------------------------------

    async def _drive(self) -> None:
        while True:
            job, future = await self.jobs.get()
            try:
                result = await job()
            except BaseException as exc:  # handed to the step that asked for the job
                if not future.done():
                    future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                if not future.done():
                    future.set_result(result)

    def run(self, job: Callable[[], Awaitable[T]]) -> T:
        """Run ``job`` in the driver task and return its result (raise what it raised)."""
        future: asyncio.Future[T] = self.loop.create_future()
        self.jobs.put_nowait((job, future))
        try:
            return self.loop.run_until_complete(asyncio.wait_for(future, STEP_TIMEOUT))
        except TimeoutError:
            raise AssertionError(f"a step did not finish in {STEP_TIMEOUT} s (hung)") from None

    # -- opening and closing runtimes ------------------------------------------------------------

    async def _start(self) -> None:
        if self.store_kind == "memory":
            self.shared_store = InMemoryEventStore()
            await self.shared_store.open()
        await self._open_runtime()

    async def _open_runtime(self) -> None:
        # SQLite: a new store object on the same file, opened and closed by the runtime
        store = self.shared_store or self.durable_store()
        runtime = Runtime(store, snapshot_every=self.snapshot_every, max_active=self.max_active)
        await runtime.__aenter__()
        self.runtime = runtime

    async def _close_runtime(self) -> None:
        runtime, self.runtime = self.runtime, None
        if runtime is not None:
            await runtime.__aexit__(None, None, None)

    def teardown(self) -> None:
        try:
            if not self.driver.done():

                async def close_all() -> None:
                    await self._close_runtime()
                    if self.shared_store is not None:
                        await self.shared_store.close()

                self.run(close_all)
        finally:
            self.driver.cancel()
            self.loop.run_until_complete(asyncio.gather(self.driver, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
            self.directory.cleanup()

    def durable_store(self) -> EventStore:
        """A new store object on the machine's database (SQLite unless a subclass says)."""
        return SQLiteEventStore(self.path)

    @property
    def store(self) -> EventStore:
        assert self.runtime is not None
        return self.runtime.store

    # -- the model ---------------------------------------------------------------------------

    def expect(self, send: Send, metadata: dict[str, Any]) -> ModelEvent | None:
        """Apply one command to the model; return its event, or None if it is Rejected."""
        events = self.model[send.aggregate_id]
        decided = decide(send.command, fold(events).balance)
        if decided is None:
            return None
        event = attrs.evolve(decided, metadata=metadata)
        old = len(events)
        events.append(event)
        every = self.snapshot_every
        if every and (old + 1) // every != old // every:
            floor = (old + 1) // every * every
            self.snapshot_floor[send.aggregate_id] = max(
                self.snapshot_floor[send.aggregate_id], floor
            )
        return event

    def next_metadata(self) -> dict[str, Any]:
        self.step += 1
        return {"step": self.step} if self.step % 2 else {}

    # -- rules ---------------------------------------------------------------------------------

    @rule(aggregate_id=aggregate_ids, command=commands)
    def ask(self, aggregate_id: str, command: Deposit | Withdraw) -> None:
        send = Send(aggregate_id, command, wait=True)
        metadata = self.next_metadata()
        expected = self.expect(send, metadata)
        runtime = self.runtime
        assert runtime is not None

        async def ask() -> list[Any] | Rejected:
            try:
                return await runtime.ref(Account, aggregate_id).ask(command, metadata=metadata)
            except Rejected as exc:
                return exc

        outcome = self.run(ask)
        if expected is None:
            assert isinstance(outcome, Rejected), f"{command} should be rejected, got {outcome}"
            return
        assert not isinstance(outcome, Rejected), f"{command} was rejected: {outcome}"
        [recorded] = outcome
        assert type(recorded.event).__name__ == expected.type
        assert recorded.event.amount == expected.data["amount"]
        assert recorded.version == len(self.model[aggregate_id])
        # every earlier step is durable: this event is the newest in the whole store
        assert recorded.position == sum(len(events) for events in self.model.values())
        assert recorded.stream_id == f"Account-{aggregate_id}"
        assert user_metadata(recorded.metadata) == metadata

    @rule(aggregate_id=aggregate_ids)
    def ask_noop(self, aggregate_id: str) -> None:
        runtime = self.runtime
        assert runtime is not None
        assert self.run(lambda: runtime.ref(Account, aggregate_id).ask(Noop())) == []

    @rule(send=sends.map(lambda s: attrs.evolve(s, wait=False)), nowait=st.booleans())
    def tell(self, send: Send, nowait: bool) -> None:
        metadata = self.next_metadata()
        self.expect(send, metadata)
        runtime = self.runtime
        assert runtime is not None
        ref = runtime.ref(Account, send.aggregate_id)

        async def tell() -> None:
            if nowait:
                ref.tell_nowait(send.command, metadata=metadata)
            else:
                await ref.tell(send.command, metadata=metadata)

        self.run(tell)

    @rule(burst=st.lists(sends, min_size=2, max_size=8))
    def burst(self, burst: list[Send]) -> None:
        """Several senders at once: sent in list order, then all awaited together."""
        expected = [self.expect(send, {}) for send in burst]
        runtime = self.runtime
        assert runtime is not None

        async def one(send: Send) -> list[Any] | Rejected | None:
            ref = runtime.ref(Account, send.aggregate_id)
            if not send.wait:
                await ref.tell(send.command)
                return None
            try:
                return await ref.ask(send.command)
            except Rejected as exc:
                return exc

        async def all_at_once() -> list[list[Any] | Rejected | None]:
            # tasks take their first step in creation order: that is the order of the sends
            tasks = [asyncio.ensure_future(one(send)) for send in burst]
            return list(await asyncio.gather(*tasks))

        outcomes = self.run(all_at_once)
        for send, event, outcome in zip(burst, expected, outcomes, strict=True):
            if not send.wait:
                assert outcome is None
            elif event is None:
                assert isinstance(outcome, Rejected), f"{send} should be rejected, got {outcome}"
            else:
                assert isinstance(outcome, list), f"{send} was rejected: {outcome}"
                assert [type(r.event).__name__ for r in outcome] == [event.type]

    @rule(aggregate_id=aggregate_ids)
    def read_state(self, aggregate_id: str) -> None:
        runtime = self.runtime
        assert runtime is not None
        state = self.run(lambda: runtime.ref(Account, aggregate_id).state())
        assert state == fold(self.model[aggregate_id])

    @rule()
    def passivate_idle(self) -> None:
        runtime = self.runtime
        assert runtime is not None

        async def passivate() -> tuple[int, int]:
            active = runtime.statistics().active_actors
            return active, runtime.passivate_idle()

        # the invariants ran after the last step: every actor is idle now, and all of them go
        active, passivated = self.run(passivate)
        assert passivated == active
        assert runtime.statistics().active_actors == 0

    @rule(
        snapshot_every=st.sampled_from(SNAPSHOT_INTERVALS),
        max_active=st.sampled_from([None, None, 1, 2]),
    )
    def restart(self, snapshot_every: int | None, max_active: int | None) -> None:
        self.run(self._close_runtime)
        self.run(self._check_snapshot_floors)
        self.snapshot_every = snapshot_every
        self.max_active = max_active
        self.run(self._open_runtime)

    async def _check_snapshot_floors(self) -> None:
        """Once a runtime has closed, every snapshot it was due to take is stored."""
        store = self.shared_store or self.durable_store()
        opened = not store.is_open
        if opened:
            await store.open()
        try:
            for aid, floor in self.snapshot_floor.items():
                snapshot = await store.load_snapshot(f"Account-{aid}")
                found = 0 if snapshot is None else snapshot.version
                assert found >= floor, f"Account-{aid}: latest snapshot v{found}, due v{floor}"
        finally:
            if opened:
                await store.close()

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def runtime_state_is_the_models(self) -> None:
        runtime = self.runtime
        if runtime is None:
            return

        async def states() -> dict[str, Account]:
            return {aid: await runtime.ref(Account, aid).state() for aid in AGGREGATE_IDS}

        found = self.run(states)
        assert found == {aid: fold(events) for aid, events in self.model.items()}

    @invariant()
    def store_holds_exactly_the_models_events(self) -> None:
        if self.runtime is None:
            return
        store = self.store

        async def read() -> tuple[dict[str, list[StoredEvent]], list[StoredEvent], dict[str, Any]]:
            streams = {
                aid: await collect(store.read_stream(f"Account-{aid}")) for aid in AGGREGATE_IDS
            }
            snapshots = {aid: await store.load_snapshot(f"Account-{aid}") for aid in AGGREGATE_IDS}
            return streams, await collect(store.read_all()), snapshots

        streams, log, snapshots = self.run(read)
        for aid, expected in self.model.items():
            stored = streams[aid]
            assert [
                ModelEvent(e.type, e.data, user_metadata(e.metadata)) for e in stored
            ] == expected, aid
            assert [e.version for e in stored] == list(range(1, len(expected) + 1))
            assert all(e.stream_id == f"Account-{aid}" for e in stored)
            snapshot = snapshots[aid]
            if snapshot is not None:
                assert 1 <= snapshot.version <= len(expected)
                prefix = fold(expected[: snapshot.version])
                assert snapshot.state == {"state": attrs.asdict(prefix)}, aid
        total = sum(len(events) for events in self.model.values())
        assert [e.position for e in log] == list(range(1, total + 1))
        for aid in AGGREGATE_IDS:
            in_log = [e for e in log if e.stream_id == f"Account-{aid}"]
            assert [(e.version, e.event_id) for e in in_log] == [
                (e.version, e.event_id) for e in streams[aid]
            ]
        assert len({e.event_id for e in log}) == total


class MemoryMachine(RuntimeMachine):
    store_kind = "memory"


class SQLiteMachine(RuntimeMachine):
    store_kind = "sqlite"


class PostgresMachine(RuntimeMachine):
    store_kind = "postgres"

    def __init__(self) -> None:
        # a schema per machine, dropped in teardown
        self.schema = f"model_{uuid.uuid4().hex}"
        super().__init__()

    def durable_store(self) -> EventStore:
        return PostgresEventStore(POSTGRES_DSN, schema=self.schema)

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            run_sync(drop_schema(POSTGRES_DSN, self.schema))


#: the explain phase re-runs a failing machine many times over for little news: leave it out
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]

TestRuntimeMatchesModelOnMemoryStore = MemoryMachine.TestCase
TestRuntimeMatchesModelOnMemoryStore.settings = settings(
    max_examples=50, stateful_step_count=40, deadline=None, phases=PHASES
)
TestRuntimeMatchesModelOnSQLiteStore = SQLiteMachine.TestCase
TestRuntimeMatchesModelOnSQLiteStore.settings = settings(
    max_examples=25, stateful_step_count=40, deadline=None, phases=PHASES
)
TestRuntimeMatchesModelOnPostgresStore = pytest.mark.postgres(
    pytest.mark.skipif(not POSTGRES_DSN, reason=NO_POSTGRES)(PostgresMachine.TestCase)
)
TestRuntimeMatchesModelOnPostgresStore.settings = settings(
    max_examples=15, stateful_step_count=40, deadline=None, phases=PHASES
)
