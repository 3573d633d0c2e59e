"""Several runtimes and several OS processes on one SQLite file, or one PostgreSQL schema:
nothing lost, nothing doubled.

The writer processes run ``tests/workers/writer.py``; it prints one JSON line per acknowledged
ask (flushed as the ask returns), so what the test reads is exactly what was acknowledged.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import attrs

from actorsource import (
    EventStore,
    PostgresEventStore,
    RecordedEvent,
    Runtime,
    SQLiteEventStore,
    StoredEvent,
    WaitTimeoutError,
)

from .conftest import drop_schema, postgres_schema
from .domain import Account, Deposit
from .workers.writer import FEE, Pair

REPO = Path(__file__).resolve().parents[1]

#: seconds a worker may take to start, or to answer, before the test gives up on it
WORKER_TIMEOUT = 30.0


def _seed() -> int:
    """A fresh seed per test run; ``ACTORSOURCE_TEST_SEED`` replays one."""
    given = os.environ.get("ACTORSOURCE_TEST_SEED")
    return int(given) if given else random.randrange(2**32)


# -- the worker processes -----------------------------------------------------------------------


class Worker:
    """A writer process whose stdout lines are read by a thread as they come."""

    def __init__(self, *args: str, stdin: bool = False, module: str = "tests.workers.writer"):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        #: every line read so far (a last line without its newline was cut by a kill)
        self.output: list[str] = []
        self._stderr: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self._stderr.extend(self.process.stderr)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    async def wait_for_line(self, matches: Callable[[str], bool], where: str) -> str:
        """Return the next whole stdout line that ``matches``; fail if the worker ends first."""
        deadline = anyio.current_time() + WORKER_TIMEOUT
        while True:
            left = deadline - anyio.current_time()
            try:
                line = await anyio.to_thread.run_sync(
                    functools.partial(self._lines.get, timeout=max(left, 0.0))
                )
            except queue.Empty:
                raise AssertionError(f"{where}: worker silent for {WORKER_TIMEOUT} s") from None
            if line is None:
                self.reap()
                raise AssertionError(
                    f"{where}: worker ended (exit {self.process.returncode}) before the line "
                    f"awaited; stderr:\n{self.stderr}"
                )
            if line.endswith("\n") and matches(line):
                return line

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.close()

    async def wait(self, where: str) -> int:
        try:
            code = await anyio.to_thread.run_sync(
                functools.partial(self.process.wait, timeout=WORKER_TIMEOUT)
            )
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{where}: worker did not finish in {WORKER_TIMEOUT} s") from None
        self.reap()
        return code

    def kill(self) -> None:
        """SIGKILL the worker (if it still runs) and reap it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.reap()

    def reap(self) -> None:
        """Wait for the process and its reader threads; close the pipes."""
        self.process.wait()
        for thread in self._threads:
            thread.join()
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()

    def acks(self) -> list[dict[str, Any]]:
        """The acknowledged asks (whole JSON lines; a line cut by a kill was never written)."""
        return [
            json.loads(line)
            for line in self.output
            if line.endswith("\n") and line.startswith('{"cmd"')
        ]

    def errors(self) -> list[str]:
        return [line for line in self.output if line.startswith('{"error"')]


def writer_args(db: Path | str, **options: object) -> list[str]:
    args = [str(db)]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            args.append(flag)
        else:
            args += [flag, str(value)]
    return args


# -- reading back and checking the file ------------------------------------------------------


@attrs.frozen
class Contents:
    #: every event, as read_all yields them
    events: list[StoredEvent]
    #: every stream, as read_stream yields it
    streams: dict[str, list[StoredEvent]]
    by_id: dict[str, StoredEvent]


async def read_contents(db: Path | EventStore) -> Contents:
    """Everything in a SQLite file, or in the (unopened) store given."""
    async with SQLiteEventStore(db) if isinstance(db, Path) else db as store:
        events = [event async for event in store.read_all()]
        streams = {
            stream_id: [event async for event in store.read_stream(stream_id)]
            for stream_id in sorted({event.stream_id for event in events})
        }
    return Contents(events, streams, {event.event_id: event for event in events})


def check_log(contents: Contents, where: str) -> None:
    """Positions 1..total, each stream's versions 1..N, read_all and read_stream agreeing."""
    events = contents.events
    positions = [event.position for event in events]
    assert positions == list(range(1, len(events) + 1)), f"{where}: positions not 1..{len(events)}"
    duplicated = [i for i, n in Counter(e.event_id for e in events).items() if n > 1]
    assert not duplicated, f"{where}: event ids stored twice: {duplicated[:5]}"
    for stream_id, stream in contents.streams.items():
        versions = [event.version for event in stream]
        assert versions == list(range(1, len(stream) + 1)), (
            f"{where}: {stream_id} versions are not 1..{len(stream)}: {_gaps(versions)}"
        )
        in_commit_order = [event for event in events if event.stream_id == stream_id]
        assert in_commit_order == stream, (
            f"{where}: {stream_id}: read_all and read_stream disagree on the stream's events"
        )


def check_acks(acks: list[dict[str, Any]], contents: Contents, where: str) -> None:
    """Every acknowledged event is stored once, where the acknowledgement said."""
    for ack in acks:
        for event_id, version, position in ack["events"]:
            stored = contents.by_id.get(event_id)
            assert stored is not None, f"{where}: acknowledged event {event_id} is not stored"
            assert (stored.stream_id, stored.version, stored.position) == (
                ack["stream"],
                version,
                position,
            ), f"{where}: event {event_id} acknowledged as {ack} but stored as {stored}"
            if ack["cmd"] is not None:
                assert stored.metadata["cmd"] == ack["cmd"], f"{where}: {stored} is not {ack}"


def _gaps(versions: list[int]) -> str:
    expected = set(range(1, max(versions, default=0) + 1))
    doubled = [v for v, n in Counter(versions).items() if n > 1]
    return f"missing {sorted(expected - set(versions))[:10]}, doubled {doubled[:10]}"


# -- the tests ------------------------------------------------------------------------------------


async def test_two_runtimes_in_one_process_share_a_file_without_losing_events(
    tmp_path: Path,
) -> None:
    seed = _seed()
    where = f"seed {seed}"
    rng = random.Random(seed)
    db = tmp_path / "shared.db"
    ids = [f"acc{i}" for i in range(5)]
    tasks_per_runtime, asks_per_task = 25, 8  # 200 asks per runtime
    acknowledged: list[tuple[str, int, list[RecordedEvent[Any]]]] = []

    async def asker(runtime: Runtime, plan: list[tuple[str, int]]) -> None:
        for aggregate_id, amount in plan:
            ref = runtime.ref(Account, aggregate_id)
            acknowledged.append((ref.stream_id, amount, await ref.ask(Deposit(amount))))

    first = Runtime(SQLiteEventStore(db), max_conflict_retries=1000)
    second = Runtime(SQLiteEventStore(db), max_conflict_retries=1000)
    async with first, second, anyio.create_task_group() as task_group:
        for _ in range(tasks_per_runtime):
            for runtime in (first, second):  # interleaved: both runtimes hit every stream
                plan = [(rng.choice(ids), rng.randint(1, 1000)) for _ in range(asks_per_task)]
                task_group.start_soon(asker, runtime, plan)
    retried = first.statistics().conflicts_retried + second.statistics().conflicts_retried
    where += f", {retried} conflicts retried"
    assert retried > 0, f"{where}: the runtimes never raced for a stream: nothing was proved"

    total = 2 * tasks_per_runtime * asks_per_task
    assert len(acknowledged) == total, where
    contents = await read_contents(db)
    check_log(contents, where)
    assert len(contents.events) == total, f"{where}: {len(contents.events)} events stored"
    assert {s for s, _, _ in acknowledged} == set(contents.streams), where
    acks = [
        {
            "cmd": None,  # asked without metadata
            "stream": stream_id,
            "events": [[r.event_id, r.version, r.position] for r in recorded],
        }
        for stream_id, _, recorded in acknowledged
    ]
    assert all(len(ack["events"]) == 1 for ack in acks), where
    check_acks(acks, contents, where)
    stored_sum = sum(event.data["amount"] for event in contents.events)
    assert stored_sum == sum(amount for _, amount, _ in acknowledged), where
    for stream_id, stream in contents.streams.items():
        acked = sum(amount for s, amount, _ in acknowledged if s == stream_id)
        assert sum(event.data["amount"] for event in stream) == acked, f"{where}: {stream_id}"


async def test_runtimes_opening_a_new_file_at_once_all_open_it(tmp_path: Path) -> None:
    rounds, runtimes = 20, 6
    failures: list[str] = []
    for round_ in range(rounds):
        db = tmp_path / f"new-{round_}.db"

        async def open_and_ask(index: int, db: Path = db) -> None:
            try:
                async with Runtime(SQLiteEventStore(db)) as runtime:
                    await runtime.ref(Account, f"r{index}").ask(Deposit(index + 1))
            except Exception as exc:  # every failure counts, not only the first
                failures.append(f"{type(exc).__name__}: {str(exc).replace(str(db), '<db>')}")

        async with anyio.create_task_group() as task_group:  # each store opens on its own thread
            for index in range(runtimes):
                task_group.start_soon(open_and_ask, index)
        if not failures:
            contents = await read_contents(db)
            check_log(contents, f"round {round_}")
            assert len(contents.streams) == runtimes, f"round {round_}"
    assert not failures, (
        f"{len(failures)} of {rounds * runtimes} runtimes failed to open a new file that other "
        f"runtimes opened at the same moment: {dict(Counter(failures))}"
    )


async def test_several_processes_with_several_runtimes_each_lose_nothing(tmp_path: Path) -> None:
    seed = _seed()
    db = tmp_path / "shared.db"
    processes, asks, concurrency = 4, 150, 16
    where = f"seed {seed}"
    # the file exists before the workers start: opening a new file at once is another test's
    # subject (test_runtimes_opening_a_new_file_at_once_all_open_it)
    async with SQLiteEventStore(db):
        pass
    workers: list[Worker] = []
    retried = 0
    try:
        for index in range(processes):
            workers.append(
                Worker(
                    *writer_args(
                        db,
                        ids="a,b,c",
                        aggregate="account",
                        asks=asks,
                        concurrency=concurrency,
                        seed=seed + index,
                        name=f"w{index}",
                        wait_go=True,
                        runtimes=2,  # two runtimes per process, each with its own store
                    ),
                    stdin=True,
                )
            )
        for index, worker in enumerate(workers):  # all open on the file, then all write at once
            await worker.wait_for_line(lambda line: line == "ready\n", f"{where}, worker {index}")
        for worker in workers:
            worker.send("go")
        for index, worker in enumerate(workers):
            code = await worker.wait(f"{where}, worker {index}")
            assert code == 0, (
                f"{where}: worker {index} exited {code}; errors: {worker.errors()[:5]}; "
                f"stderr:\n{worker.stderr}"
            )
            last = worker.output[-1]
            assert last.startswith("done "), f"{where}: worker {index} ended with {last!r}"
            retried += json.loads(last.removeprefix("done "))["conflicts_retried"]
    finally:
        for worker in workers:
            worker.kill()

    acks = [ack for worker in workers for ack in worker.acks()]
    assert len(acks) == processes * asks, where
    where += f", {retried} conflicts retried"
    assert retried > 0, f"{where}: the processes never raced for a stream: nothing was proved"
    contents = await read_contents(db)
    check_log(contents, where)
    check_acks(acks, contents, where)
    acked_ids = Counter(event_id for ack in acks for event_id, _, _ in ack["events"])
    assert max(acked_ids.values()) == 1, f"{where}: one event id acknowledged twice"
    unacknowledged = sorted(set(contents.by_id) - set(acked_ids))
    assert not unacknowledged, f"{where}: stored, never acknowledged: {unacknowledged[:5]}"
    assert len(contents.events) == processes * asks, where
    per_worker = Counter(event.metadata["worker"] for event in contents.events)
    assert per_worker == {f"w{i}": asks for i in range(processes)}, f"{where}: {per_worker}"
    assert sum(e.data["amount"] for e in contents.events) == sum(a["amount"] for a in acks), where


async def test_sigkill_of_a_writer_loses_no_acknowledged_command(tmp_path: Path) -> None:
    seed = _seed()
    rng = random.Random(seed)
    kills, kills_per_file, concurrency = 20, 5, 24
    ids = ["k0", "k1", "k2", "k3"]
    all_acks: list[dict[str, Any]] = []
    acknowledged = 0
    for kill in range(kills):
        # a file takes several kills (recovered, then written again); a new file keeps it small
        db = tmp_path / f"killed-{kill // kills_per_file}.db"
        if kill % kills_per_file == 0:
            all_acks = []
        where = f"seed {seed}, kill {kill}"
        name = f"run{kill}"
        worker = Worker(
            *writer_args(
                db,
                ids=",".join(ids),
                aggregate="pair",
                asks=0,
                concurrency=concurrency,
                seed=rng.randrange(2**32),
                name=name,
                snapshot_every=rng.choice([5, 16, 1000]),
            )
        )
        try:
            await worker.wait_for_line(lambda line: line.startswith('{"cmd"'), where)
            await anyio.sleep(rng.uniform(0.02, 0.3))  # a random moment while it writes
            assert worker.process.poll() is None, f"{where}: the writer stopped by itself"
        finally:
            worker.kill()
        assert worker.process.returncode == -signal.SIGKILL, where
        assert not worker.errors(), f"{where}: {worker.errors()[:5]}"
        acks = worker.acks()
        all_acks += acks
        acknowledged += len(acks)

        with contextlib.closing(sqlite3.connect(db)) as conn:  # this open recovers the WAL
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], where
        contents = await read_contents(db)
        where += f" ({len(acks)} acks, {len(contents.events)} events stored)"
        check_log(contents, where)
        check_acks(all_acks, contents, where)  # every acknowledgement, of every run so far

        # each command's two events were appended together: whole pairs, adjacent positions
        commands: Counter[str] = Counter()
        balances: dict[str, tuple[int, int]] = {}
        for stream_id, stream in contents.streams.items():
            assert len(stream) % 2 == 0, f"{where}: {stream_id} holds half a command"
            balance = 0
            for credited, fee in zip(stream[::2], stream[1::2], strict=True):
                assert (credited.type, fee.type) == ("Credited", "FeeCharged"), where
                assert credited.metadata == fee.metadata, f"{where}: {credited} / {fee}"
                assert fee.position == credited.position + 1, f"{where}: {credited} / {fee}"
                assert fee.data == {"amount": FEE}, where
                commands[credited.metadata["cmd"]] += 1
                balance += credited.data["amount"] - FEE
            balances[stream_id] = (balance, len(stream) // 2)
        assert max(commands.values()) == 1, f"{where}: a command stored twice"
        unacknowledged = {
            e.metadata["cmd"] for e in contents.events if e.metadata["worker"] == name
        } - {ack["cmd"] for ack in acks}
        # each asking task had at most one ask in flight when the writer died
        assert len(unacknowledged) <= concurrency, f"{where}: {len(unacknowledged)} stored unasked"

        # a fresh runtime rehydrates (snapshot + tail) to the fold of the stored events
        async with Runtime(SQLiteEventStore(db)) as runtime:
            for aggregate_id in ids:
                ref = runtime.ref(Pair, aggregate_id)
                state = await ref.state()
                expected = balances.get(ref.stream_id, (0, 0))
                assert (state.balance, state.credits) == expected, f"{where}: {ref.stream_id}"
                assert state.fees == state.credits, f"{where}: {ref.stream_id}"
    assert acknowledged >= kills, f"seed {seed}"


async def test_several_processes_hosting_the_same_aggregates_on_postgresql_lose_nothing(
    postgres_dsn: str, tmp_path: Path
) -> None:
    """Four processes with two runtimes each host the same two aggregates at once: conflicts
    make them reload and decide again; meanwhile a reader follows the log as a subscription
    does, from the last position it saw, and must never skip one."""
    seed = _seed()
    schema = postgres_schema(tmp_path)
    processes, asks, concurrency = 4, 150, 16
    where = f"seed {seed}, PostgreSQL"
    workers: list[Worker] = []
    followed: list[int] = []
    retried = 0
    try:
        # the schema exists before the workers start (opening a new one at once is tested in
        # tests/stores/test_postgres.py)
        async with PostgresEventStore(postgres_dsn, schema=schema) as follower:
            for index in range(processes):
                workers.append(
                    Worker(
                        *writer_args(
                            postgres_dsn,
                            schema=schema,
                            ids="a,b",
                            aggregate="account",
                            asks=asks,
                            concurrency=concurrency,
                            seed=seed + index,
                            name=f"w{index}",
                            wait_go=True,
                            runtimes=2,
                        ),
                        stdin=True,
                    )
                )
            for index, worker in enumerate(workers):
                await worker.wait_for_line(lambda line: line == "ready\n", f"{where}, {index}")
            finished = anyio.Event()

            async def follow() -> None:
                while True:
                    last_round = finished.is_set()
                    async for event in follower.read_all(len(followed) + 1):
                        followed.append(event.position)
                    if last_round:
                        return
                    with contextlib.suppress(WaitTimeoutError):  # a poll
                        await follower.wait_for_events(len(followed), 0.5)

            async with anyio.create_task_group() as task_group:
                task_group.start_soon(follow)
                for worker in workers:
                    worker.send("go")
                for index, worker in enumerate(workers):
                    code = await worker.wait(f"{where}, worker {index}")
                    assert code == 0, (
                        f"{where}: worker {index} exited {code}; errors: {worker.errors()[:5]}; "
                        f"stderr:\n{worker.stderr}"
                    )
                    last = worker.output[-1]
                    assert last.startswith("done "), f"{where}: worker {index} ended with {last!r}"
                    retried += json.loads(last.removeprefix("done "))["conflicts_retried"]
                finished.set()
        contents = await read_contents(PostgresEventStore(postgres_dsn, schema=schema))
        async with Runtime(PostgresEventStore(postgres_dsn, schema=schema)) as runtime:
            balances = {i: (await runtime.ref(Account, i).state()).balance for i in ("a", "b")}
    finally:
        for worker in workers:
            worker.kill()
        await drop_schema(postgres_dsn, schema)

    acks = [ack for worker in workers for ack in worker.acks()]
    assert len(acks) == processes * asks, where
    where += f", {retried} conflicts retried"
    assert retried > 0, f"{where}: the processes never raced for a stream: nothing was proved"
    check_log(contents, where)
    check_acks(acks, contents, where)
    assert len(contents.events) == processes * asks, where
    assert followed == list(range(1, len(contents.events) + 1)), f"{where}: the reader skipped"
    acked_ids = Counter(event_id for ack in acks for event_id, _, _ in ack["events"])
    assert max(acked_ids.values()) == 1, f"{where}: one event id acknowledged twice"
    assert set(contents.by_id) == set(acked_ids), f"{where}: stored, never acknowledged"
    for aggregate_id, balance in balances.items():
        acked = sum(a["amount"] for a in acks if a["stream"] == f"Account-{aggregate_id}")
        assert balance == acked, f"{where}: Account-{aggregate_id}"
