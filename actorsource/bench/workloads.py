"""The workloads: W1 (many aggregates, many callers), W1-seq (one sequential caller), W2 (one
hot aggregate), W3 (rehydration), W4 (memory and churn), W5 (skewed traffic under a cap)."""

from __future__ import annotations

import gc
import random
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import anyio

from .. import Runtime
from ._common import (
    BenchAccount,
    BenchStore,
    Deposit,
    DepositMany,
    Progress,
    Result,
    Sizes,
    ask_split,
    check,
    latency,
)
from ._loop import LoopProbe
from .baselines import AiosqliteFloor, InThreadFloor, Peer, Rival, peer_installed


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
    store: BenchStore, sizes: Sizes, progress: Progress, *, sequential: bool
) -> Result:
    """W1 (many aggregates, many callers) or W1-seq (one sequential caller)."""
    commands = sizes.seq_commands if sequential else sizes.w1_commands
    callers = 1 if sequential else sizes.w1_callers
    probe = LoopProbe()
    async with Runtime(store) as runtime:
        probe.start()
        elapsed, latencies = await _asks(runtime, sizes.w1_aggregates, commands, callers, progress)
        probe.stop()
        stats = runtime.statistics()
        batches = store.batches_committed
    check(stats.events_appended == commands, "W1 appended a wrong number of events")
    return {
        "commands": commands,
        "callers": callers,
        "seconds": elapsed,
        "commands_per_s": commands / elapsed,
        "events_per_s": stats.events_appended / elapsed,
        "commands_per_commit": commands / max(batches, 1),
        **latency(latencies),
        **probe.summary(commands),
    }


async def workload_hot(store: BenchStore, sizes: Sizes, progress: Progress) -> Result:
    """W2: one hot aggregate, many concurrent callers."""
    async with Runtime(store) as runtime:
        elapsed, latencies = await _asks(
            runtime, 1, sizes.w2_commands, sizes.w2_callers, progress, pick=lambda c, i: 0
        )
        stats = runtime.statistics()
        state = await runtime.ref(BenchAccount, "acc-0").state()
        batches = store.batches_committed
    check(state.deposits == sizes.w2_commands, "W2 lost commands")
    return {
        "commands": sizes.w2_commands,
        "callers": sizes.w2_callers,
        "seconds": elapsed,
        "commands_per_s": sizes.w2_commands / elapsed,
        "events_per_s": stats.events_appended / elapsed,
        "commands_per_commit": sizes.w2_commands / max(batches, 1),
        **latency(latencies),
    }


async def workload_rehydrate(store: BenchStore, sizes: Sizes, progress: Progress) -> Result:
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
                check(state.deposits == total, "W3 rehydrated a wrong state")
            best = min(timings)
            results[label] = {
                "ms_per_activation": best * 1000,
                "median_ms": sorted(timings)[len(timings) // 2] * 1000,
                "events_replayed": replayed,
                "replayed_events_per_s": replayed / best if replayed else None,
            }
    return results


async def workload_memory(store: BenchStore, sizes: Sizes, progress: Progress) -> Result:
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
        check(active == count, "W4 did not activate every actor")
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


async def workload_skew(store: BenchStore, sizes: Sizes, progress: Progress) -> Result:
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
    check(peak <= sizes.w5_max_active, "W5 exceeded max_active")
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
        **latency(latencies),
    }


#: rounds W1-seq and its baselines alternate in (see workload_sequential_with_floor)
SEQ_ROUNDS = 10


async def workload_sequential_with_floor(
    store: BenchStore,
    floor_path: Path | None,
    sizes: Sizes,
    progress: Progress,
    *,
    peer: bool = False,
) -> tuple[Result, dict[str, Result]]:
    """W1-seq and its baselines, run in alternating rounds; return W1-seq's results and the
    baselines' by name.

    With ``floor_path``: the fsync floor through aiosqlite (``fsync_floor``) and the raw
    in-thread floor (``raw_floor``), and with ``peer`` too, when it is installed, the
    ``eventsourcing`` package without and with its aggregate cache (``peer``, ``peer_cached``);
    each in a file named after ``floor_path``.

    All are latency-bound and take seconds; run one after the other, a shared machine's speed
    drifts between them and their ratios swing by 20 points. In :data:`SEQ_ROUNDS` alternating
    rounds each sees the same drift. W1-seq's commands go in the same order as one
    uninterrupted run's, through one runtime; only the clock stops between rounds. The loop's
    CPU clock runs during W1-seq's part of each round only; its lag is measured in one more
    round's worth of commands after the timed rounds, since the lag probe's timer would wake
    an otherwise sleeping loop a few times per command and slow the timed ones.
    """
    commands, aggregates = sizes.seq_commands, sizes.w1_aggregates
    rounds = min(SEQ_ROUNDS, commands)
    rivals: dict[str, Rival] = {}
    if floor_path is not None:

        def beside(suffix: str) -> Path:
            return floor_path.with_name(f"{floor_path.stem}-{suffix}.db")

        rivals["fsync_floor"] = AiosqliteFloor(floor_path, commands)
        rivals["raw_floor"] = InThreadFloor(beside("raw"), commands)
        if peer and peer_installed():
            for key, cache in (("peer", False), ("peer_cached", True)):
                rivals[key] = Peer(beside(key), sizes.peer_commands, aggregates, cache=cache)
    rival_seconds = dict.fromkeys(rivals, 0.0)
    latencies: list[float] = []
    seconds = 0.0
    clock = time.perf_counter
    probe = LoopProbe()
    try:
        for rival in rivals.values():
            await rival.open()
        async with Runtime(store) as runtime:
            refs = [runtime.ref(BenchAccount, f"acc-{i}") for i in range(aggregates)]
            for r in range(rounds):
                for name, rival in rivals.items():
                    started = clock()
                    await rival.run(rival.count * r // rounds, rival.count * (r + 1) // rounds)
                    rival_seconds[name] += clock() - started
                probe.start(lag=False)
                started = clock()
                for i in range(commands * r // rounds, commands * (r + 1) // rounds):
                    asked = clock()
                    await refs[i % aggregates].ask(Deposit(1))
                    latencies.append(clock() - asked)
                seconds += clock() - started
                probe.stop()
                progress(f"{commands * (r + 1) // rounds:,}/{commands:,} commands")
            lag_commands = max(commands // rounds, 1)
            probe.start()
            for i in range(lag_commands):
                await refs[i % aggregates].ask(Deposit(1))
            probe.stop(cpu=False)
            stats = runtime.statistics()
    finally:
        for rival in rivals.values():
            await rival.close()
    check(
        stats.events_appended == commands + lag_commands,
        "W1-seq appended a wrong number of events",
    )
    # the first ask to each aggregate loads it first (one read); the later ones only commit
    first_asks, later_asks = latencies[:aggregates], latencies[aggregates:]
    seq: Result = {
        "commands": commands,
        "callers": 1,
        "seconds": seconds,
        "commands_per_s": commands / seconds,
        "events_per_s": (stats.events_appended - lag_commands) / seconds,
        "rounds_alternated_with_floor": rounds if rivals else 0,
        "first_asks": ask_split(first_asks),
        "later_asks": ask_split(later_asks),
        **latency(latencies),
        **probe.summary(commands),
    }
    measured = {name: rival.result(rival_seconds[name], rounds) for name, rival in rivals.items()}
    return seq, measured
