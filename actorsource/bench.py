"""The throughput benchmark suite behind ``actorsource bench``.

Each workload runs on a fresh SQLite file at the default durability (WAL, synchronous=FULL), or,
given a PostgreSQL DSN, in a fresh schema of that database (dropped afterwards) at the server's
durability settings. Baselines are measured in the same run, so that results read as ratios that
survive a noisy machine: the raw batched-insert ceiling, the per-commit fsync floor, and (when
installed) the ``eventsourcing`` package as the Python peer. The baselines are SQLite's, so they
run only with the SQLite store.
"""

from __future__ import annotations

import gc
import importlib
import itertools
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import attrs
import orjson

from . import (
    Aggregate,
    EventStore,
    PostgresEventStore,
    Runtime,
    SQLiteEventStore,
    apply,
    command,
    tune_gc,
    tune_switch_interval,
)
from ._ids import new_event_id
from ._tuning import DEFAULT_GEN0_THRESHOLD, DEFAULT_SWITCH_INTERVAL
from .stores.postgres import drop_schema, redact_dsn, server_facts

Result = dict[str, Any]

WORKLOADS = ("W1", "W1-seq", "W2", "W3", "W4", "W5")


@attrs.frozen
class Deposit:
    """Benchmark command: deposit an amount."""

    amount: int


@attrs.frozen
class DepositMany:
    """Benchmark command: make ``count`` deposits at once (to build long streams fast)."""

    count: int


@attrs.frozen
class Deposited:
    """Benchmark event."""

    amount: int


@attrs.define
class BenchAccount(Aggregate):
    """The benchmark aggregate: a balance and a deposit count."""

    balance: int = 0
    deposits: int = 0

    @command
    def deposit(self, cmd: Deposit) -> Deposited:
        return Deposited(cmd.amount)

    @command
    def deposit_many(self, cmd: DepositMany) -> list[Deposited]:
        return [Deposited(1)] * cmd.count

    @apply
    def deposited(self, event: Deposited) -> None:
        self.balance += event.amount
        self.deposits += 1


@attrs.define
class Sizes:
    """Workload sizes (the defaults are the published suite; ``quick()`` is a smoke run)."""

    w1_aggregates: int = 1_000
    w1_commands: int = 100_000
    w1_callers: int = 1_000
    seq_commands: int = 5_000
    w2_commands: int = 20_000
    w2_callers: int = 100
    w3_events: int = 10_000
    w3_repeats: int = 5
    w4_actors: int = 100_000
    w4_churn: int = 20_000
    w5_aggregates: int = 100_000
    w5_commands: int = 100_000
    w5_callers: int = 1_000
    w5_max_active: int = 10_000
    peer_commands: int = 5_000

    @classmethod
    def quick(cls) -> Sizes:
        """Tiny sizes: checks that every workload runs and is correct, measures nothing."""
        return cls(
            w1_aggregates=20,
            w1_commands=400,
            w1_callers=40,
            seq_commands=50,
            w2_commands=200,
            w2_callers=10,
            w3_events=300,
            w3_repeats=2,
            w4_actors=300,
            w4_churn=200,
            w5_aggregates=500,
            w5_commands=500,
            w5_callers=20,
            w5_max_active=50,
            peer_commands=50,
        )


Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Return the value at ``fraction`` of a sorted sequence (nearest rank)."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def _latency(latencies: list[float]) -> Result:
    latencies.sort()
    return {
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "p999_ms": percentile(latencies, 0.999) * 1000,
    }


def _ask_split(latencies: list[float]) -> Result | None:
    """How many asks, their mean and median latency (None: there were none)."""
    if not latencies:
        return None
    return {
        "count": len(latencies),
        "mean_ms": sum(latencies) / len(latencies) * 1000,
        "p50_ms": percentile(sorted(latencies), 0.50) * 1000,
    }


def machine() -> Result:
    """Describe the machine and settings the numbers were measured on (the SQLite store)."""
    return {
        "cpus": os.cpu_count(),
        # fewer under taskset or a container's CPU set: it changes the numbers (see the README)
        "cpus_usable": _usable_cpus(),
        "python": platform.python_version(),
        "store": "SQLite",
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "durability": "WAL, synchronous=FULL",
    }


def _usable_cpus() -> int | None:
    """The CPUs this process may run on (its affinity), where the platform says."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


async def postgres_machine(dsn: str) -> Result:
    """Describe the machine and the PostgreSQL server the numbers were measured on."""
    facts = await server_facts(dsn)
    return {
        **machine(),
        "store": f"PostgreSQL {facts['server_version']}",
        "dsn": redact_dsn(dsn),
        "durability": (f"synchronous_commit={facts['synchronous_commit']}, fsync={facts['fsync']}"),
    }


def _batches(store: EventStore) -> int:
    """The transactions a store's writer committed (its group commits)."""
    return int(getattr(store, "batches_committed", 0))


# -- actorsource workloads -------------------------------------------------------------------


async def _asks(
    runtime: Runtime,
    aggregates: int,
    commands: int,
    callers: int,
    progress: Progress,
    *,
    pick: Callable[[int, int], int] | None = None,
) -> tuple[float, list[float]]:
    """Run ``commands`` asks from ``callers`` concurrent callers; return elapsed, latencies."""
    refs = [runtime.ref(BenchAccount, f"acc-{i}") for i in range(aggregates)]
    per_caller, extra = divmod(commands, callers)
    latencies: list[float] = []
    done = 0
    step = max(commands // 10, 1)
    clock = time.perf_counter

    async def caller(number: int) -> None:
        nonlocal done
        count = per_caller + (1 if number < extra else 0)
        for i in range(count):
            index = pick(number, i) if pick is not None else (number + i) % aggregates
            started = clock()
            await refs[index].ask(Deposit(1))
            latencies.append(clock() - started)
            done += 1
            if done % step == 0:
                progress(f"{done:,}/{commands:,} commands")

    started = clock()
    async with anyio.create_task_group() as tg:
        for number in range(callers):
            tg.start_soon(caller, number)
    return clock() - started, latencies


async def workload_many(
    store: EventStore, sizes: Sizes, progress: Progress, *, sequential: bool
) -> Result:
    """W1 (many aggregates, many callers) or W1-seq (one sequential caller)."""
    commands = sizes.seq_commands if sequential else sizes.w1_commands
    callers = 1 if sequential else sizes.w1_callers
    async with Runtime(store) as runtime:
        elapsed, latencies = await _asks(runtime, sizes.w1_aggregates, commands, callers, progress)
        stats = runtime.statistics()
        batches = _batches(store)
    _check(stats.events_appended == commands, "W1 appended a wrong number of events")
    return {
        "commands": commands,
        "callers": callers,
        "seconds": elapsed,
        "commands_per_s": commands / elapsed,
        "events_per_s": stats.events_appended / elapsed,
        "commands_per_commit": commands / max(batches, 1),
        **_latency(latencies),
    }


async def workload_hot(store: EventStore, sizes: Sizes, progress: Progress) -> Result:
    """W2: one hot aggregate, many concurrent callers."""
    async with Runtime(store) as runtime:
        elapsed, latencies = await _asks(
            runtime, 1, sizes.w2_commands, sizes.w2_callers, progress, pick=lambda c, i: 0
        )
        stats = runtime.statistics()
        state = await runtime.ref(BenchAccount, "acc-0").state()
        batches = _batches(store)
    _check(state.deposits == sizes.w2_commands, "W2 lost commands")
    return {
        "commands": sizes.w2_commands,
        "callers": sizes.w2_callers,
        "seconds": elapsed,
        "commands_per_s": sizes.w2_commands / elapsed,
        "events_per_s": stats.events_appended / elapsed,
        "commands_per_commit": sizes.w2_commands / max(batches, 1),
        **_latency(latencies),
    }


async def workload_rehydrate(store: EventStore, sizes: Sizes, progress: Progress) -> Result:
    """W3: activate an aggregate of ``w3_events`` events, without and with snapshots."""
    total = sizes.w3_events
    tail = min(50, total // 4)
    results: Result = {"events": total}
    async with store:
        for label, every in (("no_snapshot", None), ("snapshot_every_100", 100)):
            aggregate_id = f"big-{label}"
            async with Runtime(store, snapshot_every=every) as runtime:
                ref = runtime.ref(BenchAccount, aggregate_id)
                for _ in range((total - tail) // 100):
                    await ref.ask(DepositMany(100))
                for _ in range(total - tail - (total - tail) // 100 * 100 + tail):
                    await ref.ask(Deposit(1))
            progress(f"W3 {label}: stream written")
            timings: list[float] = []
            replayed = 0
            for _ in range(sizes.w3_repeats):
                async with Runtime(store) as runtime:
                    started = time.perf_counter()
                    state = await runtime.ref(BenchAccount, aggregate_id).state()
                    timings.append(time.perf_counter() - started)
                    replayed = runtime.statistics().events_replayed
                _check(state.deposits == total, "W3 rehydrated a wrong state")
            best = min(timings)
            results[label] = {
                "ms_per_activation": best * 1000,
                "median_ms": sorted(timings)[len(timings) // 2] * 1000,
                "events_replayed": replayed,
                "replayed_events_per_s": replayed / best if replayed else None,
            }
    return results


async def workload_memory(store: EventStore, sizes: Sizes, progress: Progress) -> Result:
    """W4: bytes per live idle actor, bytes retained after passivation, churn rate."""
    count = sizes.w4_actors
    async with store:
        async with Runtime(store) as runtime:
            await runtime.ref(BenchAccount, "warm-up").state()  # the codec, the reader
            runtime.passivate_idle()
            gc.collect()
            tracemalloc.start()
            try:
                baseline = tracemalloc.get_traced_memory()[0]

                async def activate(start: int) -> None:
                    # refs are made and dropped: what stays is what the runtime keeps
                    for i in range(start, count, 500):
                        await runtime.ref(BenchAccount, f"m-{i}").state()

                async with anyio.create_task_group() as tg:
                    for start in range(500):
                        tg.start_soon(activate, start)
                progress(f"W4: {count:,} actors live")
                gc.collect()
                live = tracemalloc.get_traced_memory()[0] - baseline
                active = runtime.statistics().active_actors
                runtime.passivate_idle()
                gc.collect()
                retained = tracemalloc.get_traced_memory()[0] - baseline
            finally:
                tracemalloc.stop()
        _check(active == count, "W4 did not activate every actor")
        churn = sizes.w4_churn
        async with Runtime(store, passivate_after=0.0) as runtime:
            churn_refs = [runtime.ref(BenchAccount, f"c-{i}") for i in range(churn)]

            async def visit(start: int) -> None:
                for i in range(start, churn, 100):
                    await churn_refs[i].ask(Deposit(1))

            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for start in range(100):
                    tg.start_soon(visit, start)
            # passivation is timer-driven: poll the count it changes
            while runtime.statistics().active_actors:  # noqa: ASYNC110
                await anyio.sleep(0.001)
            elapsed = time.perf_counter() - started
            stats = runtime.statistics()
    return {
        "actors": count,
        "bytes_per_idle_actor": live / count,
        "bytes_retained_after_passivation": retained,
        "retained_fraction_of_live": retained / live if live else 0.0,
        "churn_actors": churn,
        "activations_plus_passivations_per_s": (stats.activations + stats.passivations) / elapsed,
    }


async def workload_skew(store: EventStore, sizes: Sizes, progress: Progress) -> Result:
    """W5: Zipf-distributed commands over many aggregates with a cap on live actors."""
    n = sizes.w5_aggregates
    rng = random.Random(42)
    weights = [1.0 / (rank + 1) ** 1.1 for rank in range(n)]
    cumulative: list[float] = []
    running = 0.0
    for weight in weights:
        running += weight
        cumulative.append(running)
    targets = rng.choices(range(n), cum_weights=cumulative, k=sizes.w5_commands)
    callers = sizes.w5_callers
    per_caller = sizes.w5_commands // callers
    peak = 0

    def pick(caller: int, i: int) -> int:
        return targets[caller * per_caller + i]

    async with Runtime(store, max_active=sizes.w5_max_active) as runtime:
        elapsed, latencies = await _asks(
            runtime, n, per_caller * callers, callers, progress, pick=pick
        )
        stats = runtime.statistics()
        peak = stats.active_actors
    _check(peak <= sizes.w5_max_active, "W5 exceeded max_active")
    commands = per_caller * callers
    return {
        "commands": commands,
        "aggregates": n,
        "max_active": sizes.w5_max_active,
        "seconds": elapsed,
        "commands_per_s": commands / elapsed,
        "events_per_s": stats.events_appended / elapsed,
        "activations": stats.activations,
        "passivations": stats.passivations,
        **_latency(latencies),
    }


# -- baselines -------------------------------------------------------------------------------


def _rows(count: int) -> list[tuple[Any, ...]]:
    now = datetime.now(UTC).isoformat()
    data = orjson.dumps({"amount": 1}).decode()
    return [
        (
            i + 1,
            f"BenchAccount-acc-{i % 1000}",
            i // 1000 + 1,
            "Deposited",
            data,
            _root_metadata(),
            new_event_id(),
            now,
        )
        for i in range(count)
    ]


def _root_metadata() -> str:
    """The metadata the runtime stores for a command sent with no ids: three equal new ids."""
    command_id = new_event_id()
    ids = {"correlation_id": command_id, "causation_id": command_id, "command_id": command_id}
    return orjson.dumps(ids).decode()


_INSERT = (
    "INSERT INTO events (position, stream_id, version, type, data, metadata, event_id, "
    "recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


async def _schema(path: Path) -> None:
    async with SQLiteEventStore(path):
        pass


async def baseline_ceiling(path: Path, count: int, batch: int) -> Result:
    """Raw aiosqlite: the same rows, same schema and durability, ``batch`` rows a transaction."""
    await _schema(path)
    rows = _rows(count)
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = FULL")
        started = time.perf_counter()
        for start in range(0, count, batch):
            await conn.execute("BEGIN IMMEDIATE")
            await conn.executemany(_INSERT, rows[start : start + batch])
            await conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
    return {"rows": count, "batch": batch, "events_per_s": count / elapsed}


async def baseline_fsync_floor(path: Path, count: int) -> Result:
    """Raw aiosqlite: one transaction (one fsync) per row, sequential: execute, then commit.

    The least a durable single-row write costs through aiosqlite (two thread hops and an fsync).
    """
    await _schema(path)
    rows = _rows(count)
    async with aiosqlite.connect(path) as conn:
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = FULL")
        started = time.perf_counter()
        for row in rows:
            await conn.execute(_INSERT, row)
            await conn.commit()
        elapsed = time.perf_counter() - started
    return {"rows": count, "events_per_s": count / elapsed}


#: rounds W1-seq and the fsync floor alternate in (see workload_sequential_with_floor)
SEQ_ROUNDS = 10


async def workload_sequential_with_floor(
    store: EventStore, floor_path: Path | None, sizes: Sizes, progress: Progress
) -> tuple[Result, Result | None]:
    """W1-seq, and the fsync floor (when ``floor_path`` is given), run in alternating rounds.

    Both are latency-bound and take seconds; run one after the other, a shared machine's
    speed drifts between them and their ratio swings by 20 points. In :data:`SEQ_ROUNDS`
    alternating rounds each sees the same drift. W1-seq's commands go in the same order as
    one uninterrupted run's, through one runtime; only the clock stops between rounds.
    """
    commands, aggregates = sizes.seq_commands, sizes.w1_aggregates
    rounds = min(SEQ_ROUNDS, commands)
    bounds = [commands * r // rounds for r in range(rounds + 1)]
    floor_rows: list[tuple[Any, ...]] = []
    floor_seconds = 0.0
    floor_conn: aiosqlite.Connection | None = None
    if floor_path is not None:
        await _schema(floor_path)
        floor_rows = _rows(commands)
        floor_conn = await aiosqlite.connect(floor_path)
    latencies: list[float] = []
    seconds = 0.0
    clock = time.perf_counter
    try:
        if floor_conn is not None:
            await floor_conn.execute("PRAGMA journal_mode = WAL")
            await floor_conn.execute("PRAGMA synchronous = FULL")
        async with Runtime(store) as runtime:
            refs = [runtime.ref(BenchAccount, f"acc-{i}") for i in range(aggregates)]
            for first, end in itertools.pairwise(bounds):
                if floor_conn is not None:
                    started = clock()
                    for row in floor_rows[first:end]:
                        await floor_conn.execute(_INSERT, row)
                        await floor_conn.commit()
                    floor_seconds += clock() - started
                started = clock()
                for i in range(first, end):
                    asked = clock()
                    await refs[i % aggregates].ask(Deposit(1))
                    latencies.append(clock() - asked)
                seconds += clock() - started
                progress(f"{end:,}/{commands:,} commands")
            stats = runtime.statistics()
    finally:
        if floor_conn is not None:
            await floor_conn.close()
    _check(stats.events_appended == commands, "W1-seq appended a wrong number of events")
    # the first ask to each aggregate loads it first (one read); the later ones only commit
    first_asks, later_asks = latencies[:aggregates], latencies[aggregates:]
    seq: Result = {
        "commands": commands,
        "callers": 1,
        "seconds": seconds,
        "commands_per_s": commands / seconds,
        "events_per_s": stats.events_appended / seconds,
        "rounds_alternated_with_floor": rounds if floor_conn is not None else 0,
        "first_asks": _ask_split(first_asks),
        "later_asks": _ask_split(later_asks),
        **_latency(latencies),
    }
    floor = (
        {"rows": commands, "events_per_s": commands / floor_seconds, "rounds": rounds}
        if floor_conn is not None
        else None
    )
    return seq, floor


_peer_classes: dict[str, Any] = {}


def _peer_account_class() -> Any:
    """Define the peer's aggregate once (eventsourcing registers classes by topic)."""
    if "account" not in _peer_classes:
        # optional (the bench extra), imported only when the peer baseline runs
        domain = importlib.import_module("eventsourcing.domain")
        event = domain.event

        class PeerAccount(domain.Aggregate):  # type: ignore[misc,name-defined]
            @event("Opened")  # type: ignore[untyped-decorator]
            def __init__(self) -> None:
                self.balance = 0

            @event("Deposited")  # type: ignore[untyped-decorator]
            def deposit(self, amount: int) -> None:
                self.balance += amount

        _peer_classes["account"] = PeerAccount
    return _peer_classes["account"]


def baseline_peer(path: Path, commands: int, aggregates: int, *, cache: bool) -> Result | None:
    """The ``eventsourcing`` package (if installed) on its SQLite recorder, sequentially.

    Its recorder uses WAL and SQLite's default ``synchronous=FULL``: the same durability.
    """
    try:
        application = importlib.import_module("eventsourcing.application")
        account_class = _peer_account_class()
    except ImportError:
        return None
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(path),
        "SQLITE_LOCK_TIMEOUT": "10",
    }
    if cache:
        env["AGGREGATE_CACHE_MAXSIZE"] = str(aggregates)
    app = application.Application(env=env)
    ids = []
    for _ in range(aggregates):
        account = account_class()
        app.save(account)
        ids.append(account.id)
    started = time.perf_counter()
    for i in range(commands):
        account = app.repository.get(ids[i % aggregates])
        account.deposit(1)
        app.save(account)
    elapsed = time.perf_counter() - started
    app.close()
    return {"commands": commands, "cache": cache, "commands_per_s": commands / elapsed}


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


# -- the suite -------------------------------------------------------------------------------


async def run_suite(
    workloads: Sequence[str],
    sizes: Sizes,
    progress: Progress = _quiet,
    *,
    directory: Path | None = None,
    peer: bool = True,
    postgres_dsn: str | None = None,
    gc_tuned: bool = False,
    switch_tuned: bool = False,
) -> Result:
    """Run the chosen workloads and their baselines; return every number measured.

    :param postgres_dsn: run the workloads on PostgreSQL, each in a fresh schema of this
        database (dropped afterwards); the SQLite baselines are not run then
    :param gc_tuned: run everything (workloads and baselines alike) after :func:`tune_gc`,
        as a service that calls it at startup would; the collector is restored afterwards
    :param switch_tuned: the same with :func:`tune_switch_interval` (restored afterwards)
    """
    results: Result = {
        "machine": await postgres_machine(postgres_dsn) if postgres_dsn else machine(),
        "workloads": {},
        "baselines": {},
    }
    results["machine"]["gc"] = (
        f"tuned (tune_gc: first threshold {DEFAULT_GEN0_THRESHOLD:,}, startup objects frozen)"
        if gc_tuned
        else "default thresholds {}, {}, {}".format(*gc.get_threshold())
    )
    results["machine"]["switch_interval"] = (
        f"tuned (tune_switch_interval: {DEFAULT_SWITCH_INTERVAL * 1000:g} ms)"
        if switch_tuned
        else f"{sys.getswitchinterval() * 1000:g} ms"
    )
    previous = tune_gc() if gc_tuned else None
    previous_interval = tune_switch_interval() if switch_tuned else None
    try:
        await _run_suite(
            results, workloads, sizes, progress, directory, peer=peer, postgres_dsn=postgres_dsn
        )
    finally:
        if previous is not None:
            gc.unfreeze()
            gc.set_threshold(*previous)
        if previous_interval is not None:
            sys.setswitchinterval(previous_interval)
    results["ratios"] = ratios(results)
    return results


async def _run_suite(
    results: Result,
    workloads: Sequence[str],
    sizes: Sizes,
    progress: Progress,
    directory: Path | None,
    *,
    peer: bool,
    postgres_dsn: str | None,
) -> None:
    on_postgres = postgres_dsn is not None
    if on_postgres:
        results["baselines_skipped"] = (
            "the raw ceiling, the fsync floor and eventsourcing measure SQLite: not run on "
            "PostgreSQL"
        )
    schemas: list[str] = []
    with tempfile.TemporaryDirectory(dir=directory, prefix="actorsource-bench-") as tmp:
        counter = 0

        def fresh() -> Path:
            nonlocal counter
            counter += 1
            return Path(tmp) / f"bench-{counter}.db"

        def fresh_store() -> EventStore:
            if postgres_dsn is None:
                return SQLiteEventStore(fresh())
            schemas.append(f"bench_{os.getpid()}_{int(time.time())}_{len(schemas) + 1}")
            return PostgresEventStore(postgres_dsn, schema=schemas[-1])

        async def measure(name: str, job: Callable[[], Awaitable[Any]]) -> Any:
            gc.collect()  # no workload pays for the garbage of the one before
            progress(f"{name}: running")
            value = await job()
            progress(f"{name}: done")
            return value

        base = results["baselines"]
        found = results["workloads"]
        try:
            if "W1" in workloads:

                async def ceiling() -> Result:
                    return await baseline_ceiling(fresh(), sizes.w1_commands, sizes.w1_callers)

                # the ceiling before and after W1, so that a drift of the machine's speed
                # during W1 weighs on both sides of the ratio
                before = None if on_postgres else await measure("ceiling", ceiling)
                found["W1"] = await measure(
                    "W1", lambda: workload_many(fresh_store(), sizes, progress, sequential=False)
                )
                if before is not None:
                    after = await measure("ceiling again", ceiling)
                    rates = [before["events_per_s"], after["events_per_s"]]
                    base["ceiling"] = {
                        **before,
                        "events_per_s": sum(rates) / 2,
                        "before_and_after_W1": rates,
                    }
            if "W1-seq" in workloads:
                seq, floor = await measure(
                    "W1-seq and the fsync floor, alternating",
                    lambda: workload_sequential_with_floor(
                        fresh_store(), None if on_postgres else fresh(), sizes, progress
                    ),
                )
                found["W1-seq"] = seq
                if floor is not None:
                    base["fsync_floor"] = floor
            if "W2" in workloads:
                found["W2"] = await measure(
                    "W2", lambda: workload_hot(fresh_store(), sizes, progress)
                )
            if "W3" in workloads:
                found["W3"] = await measure(
                    "W3", lambda: workload_rehydrate(fresh_store(), sizes, progress)
                )
            if "W4" in workloads:
                found["W4"] = await measure(
                    "W4", lambda: workload_memory(fresh_store(), sizes, progress)
                )
            if "W5" in workloads:
                found["W5"] = await measure(
                    "W5", lambda: workload_skew(fresh_store(), sizes, progress)
                )
            if peer and not on_postgres and "W1" in workloads:
                for cache in (False, True):
                    key = "peer_cached" if cache else "peer"
                    progress(f"{key}: running")
                    measured = baseline_peer(
                        fresh(), sizes.peer_commands, sizes.w1_aggregates, cache=cache
                    )
                    if measured is not None:
                        base[key] = measured
        finally:
            if postgres_dsn is not None:
                for schema in schemas:
                    await drop_schema(postgres_dsn, schema)


async def run_repeated(
    runs: int,
    workloads: Sequence[str],
    sizes: Sizes,
    progress: Progress = _quiet,
    **options: Any,
) -> Result:
    """Run the suite ``runs`` times over (fresh files each time); return every run and, per
    ratio and per workload's rate, the median and the range over the runs.

    On a shared machine one run's ratios swing by several points (see the README), so a
    claim about a ratio is better read off the median of a few runs than off any one of them.

    :param options: the keyword arguments of :func:`run_suite`
    :raises ValueError: if ``runs`` is not a positive int
    """
    if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
        msg = f"runs must be a positive int, got {runs!r}"
        raise ValueError(msg)
    results: list[Result] = []
    for number in range(1, runs + 1):
        progress(f"run {number} of {runs}")
        results.append(await run_suite(workloads, sizes, progress, **options))
    return {"machine": results[0]["machine"], "runs": results, "over_runs": over_runs(results)}


#: the workloads measured in commands/s (a row each in the table, and in the summary over runs)
_RATED: tuple[str, ...] = ("W1", "W1-seq", "W2", "W5")


def over_runs(results: Sequence[Result]) -> Result:
    """The median, lowest and highest of each ratio, and of each workload's commands/s, over
    several runs (a ratio or workload missing from a run is left out for that run)."""
    series: dict[str, list[float]] = {}
    for result in results:
        for name, value in result["ratios"].items():
            series.setdefault(name, []).append(value)
    for result in results:
        for name in _RATED:
            workload = result["workloads"].get(name)
            if workload:
                series.setdefault(f"{name} commands/s", []).append(workload["commands_per_s"])
    return {
        name: {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "values": values,
        }
        for name, values in series.items()
    }


def ratios(results: Result) -> Result:
    """Derive the ratios the targets are stated in from one run's numbers."""
    found, base = results["workloads"], results["baselines"]
    out: Result = {}
    w1 = found.get("W1")
    if w1 and "ceiling" in base:
        out["W1_vs_ceiling"] = w1["events_per_s"] / base["ceiling"]["events_per_s"]
    peers = [base[k]["commands_per_s"] for k in ("peer", "peer_cached") if k in base]
    if w1 and peers:
        out["W1_vs_peer_best"] = w1["commands_per_s"] / max(peers)
    seq = found.get("W1-seq")
    if seq and "fsync_floor" in base:
        floor_rate = base["fsync_floor"]["events_per_s"]
        out["W1seq_vs_fsync_floor"] = seq["events_per_s"] / floor_rate
        later = seq.get("later_asks")
        if later and later["mean_ms"] > 0:
            # a diagnostic beside the target: an ask to a loaded aggregate (a commit, no load)
            # against the floor's row, so the latency the runtime adds shows apart from the
            # loads of the first asks, which the floor has no counterpart for
            out["W1seq_later_asks_vs_fsync_floor"] = 1000 / floor_rate / later["mean_ms"]
    if w1 and "W2" in found:
        out["W2_vs_W1"] = found["W2"]["commands_per_s"] / w1["commands_per_s"]
    return out


def format_table(results: Result) -> str:
    """Render results as a plain-text report."""
    m = results["machine"]
    store = m["store"] if m.get("store", "SQLite") != "SQLite" else f"SQLite {m['sqlite']}"
    cpus = f"{m['cpus']} CPUs"
    if m.get("cpus_usable") not in (None, m["cpus"]):
        cpus += f" ({m['cpus_usable']} usable by this process)"
    lines = [
        f"actorsource bench: {cpus}, Python {m['python']}, {store}, {m['durability']}",
        f"garbage collector: {m['gc']}; switch interval: {m['switch_interval']}",
        "",
        f"{'workload':<22}{'commands/s':>12}{'events/s':>12}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'p99.9 ms':>10}",
    ]
    for name in _RATED:
        r = results["workloads"].get(name)
        if r:
            lines.append(
                f"{name:<22}{r['commands_per_s']:>12,.0f}{r.get('events_per_s', 0):>12,.0f}"
                f"{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['p999_ms']:>10.2f}"
            )
    base = results["baselines"]
    for key, label in (
        ("ceiling", "ceiling (raw batched)"),
        ("fsync_floor", "fsync floor (1/commit)"),
        ("peer", "eventsourcing"),
        ("peer_cached", "eventsourcing+cache"),
    ):
        b = base.get(key)
        if b:
            rate = b.get("events_per_s", b.get("commands_per_s", 0.0))
            lines.append(f"{label:<22}{rate:>12,.0f}")
    if "baselines_skipped" in results:
        lines.append(f"baselines: {results['baselines_skipped']}")
    seq = results["workloads"].get("W1-seq")
    if seq and seq.get("first_asks"):
        lines.append("")
        lines.append(_sequential_asks_line(seq, base.get("fsync_floor")))
    w3 = results["workloads"].get("W3")
    if w3:
        lines.append("")
        for label in ("no_snapshot", "snapshot_every_100"):
            r = w3[label]
            rate = r["replayed_events_per_s"]
            rate_text = f"{rate:,.0f} events/s replayed" if rate else "nothing replayed"
            lines.append(
                f"W3 {label:<19} {r['ms_per_activation']:8.2f} ms per activation of "
                f"{w3['events']:,} events ({rate_text})"
            )
    w4 = results["workloads"].get("W4")
    if w4:
        lines.append("")
        lines.append(
            f"W4 {w4['bytes_per_idle_actor']:,.0f} bytes per live idle actor "
            f"({w4['actors']:,} actors); {w4['bytes_retained_after_passivation']:,.0f} bytes "
            f"retained after passivation ({w4['retained_fraction_of_live']:.1%} of live); "
            f"{w4['activations_plus_passivations_per_s']:,.0f} activations+passivations/s"
        )
    w5 = results["workloads"].get("W5")
    if w5:
        lines.append(
            f"W5 {w5['activations']:,} activations, {w5['passivations']:,} passivations "
            f"with max_active={w5['max_active']:,} over {w5['aggregates']:,} aggregates"
        )
    if results["ratios"]:
        lines.append("")
        for key, value in results["ratios"].items():
            text = f"{value:.1f}x" if key.endswith("peer_best") else f"{value:.0%}"
            lines.append(f"{key:<32}{text:>8}")
    return "\n".join(lines)


def format_repeated(repeated: Result) -> str:
    """Render :func:`run_repeated`'s results: the summary over the runs, each ratio as a
    median with its range."""
    runs = repeated["runs"]
    first_lines = format_table(runs[0]).splitlines()[:2]  # the machine and its settings
    lines = [
        *first_lines,
        "",
        f"{f'over {len(runs)} runs':<32}{'median':>12}{'min':>12}{'max':>12}",
    ]
    for name, spread in repeated["over_runs"].items():
        if name.endswith("commands/s"):
            cells = [f"{spread[k]:>12,.0f}" for k in ("median", "min", "max")]
        elif name.endswith("peer_best"):
            cells = [f"{spread[k]:>11.1f}x" for k in ("median", "min", "max")]
        else:
            cells = [f"{spread[k]:>12.0%}" for k in ("median", "min", "max")]
        lines.append(f"{name:<32}{''.join(cells)}")
    return "\n".join(lines)


def _sequential_asks_line(seq: Result, floor: Result | None) -> str:
    """W1-seq's first asks (a load, then a commit) apart from the later ones (a commit)."""
    first, later = seq["first_asks"], seq.get("later_asks")
    text = (
        f"W1-seq {first['count']:,} first asks (load, then commit): mean "
        f"{first['mean_ms']:.2f} ms, p50 {first['p50_ms']:.2f} ms"
    )
    if later:
        text += (
            f"; {later['count']:,} later asks: mean {later['mean_ms']:.2f} ms, "
            f"p50 {later['p50_ms']:.2f} ms"
        )
    if floor:
        text += f"; the fsync floor: {1000 / floor['events_per_s']:.2f} ms a row"
    return text


def stderr_progress(message: str) -> None:
    """Report progress on stderr (the numbers go to stdout)."""
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()
