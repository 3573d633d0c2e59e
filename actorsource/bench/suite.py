"""The suite: runs the chosen workloads and their baselines on fresh stores, over one run or
several, and derives the ratios the targets are stated in."""

from __future__ import annotations

import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from .. import PostgresEventStore, SQLiteEventStore, tune_gc, tune_switch_interval
from .._tuning import DEFAULT_GEN0_THRESHOLD, DEFAULT_SWITCH_INTERVAL
from ..stores.postgres import drop_schema
from ._common import BenchStore, Progress, Result, Sizes, machine, postgres_machine, quiet
from .baselines import baseline_ceiling, baseline_peer, peer_installed
from .workloads import (
    workload_hot,
    workload_many,
    workload_memory,
    workload_rehydrate,
    workload_sequential_with_floor,
    workload_skew,
)

#: why the eventsourcing rows are missing, and how to have them
PEER_MISSING = (
    "eventsourcing (the Python peer) is not installed, so its baseline did not run: "
    "pip install 'actorsource[bench]' adds it (--no-peer leaves it out)"
)


async def run_suite(
    workloads: Sequence[str],
    sizes: Sizes,
    progress: Progress = quiet,
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
            "the raw ceiling, the floors and eventsourcing measure SQLite: not run on PostgreSQL"
        )
    elif peer and {"W1", "W1-seq"} & set(workloads) and not peer_installed():
        # said, not left out silently: a reader would look for the rows
        results["peer_skipped"] = PEER_MISSING
        progress(PEER_MISSING)
    schemas: list[str] = []
    with tempfile.TemporaryDirectory(dir=directory, prefix="actorsource-bench-") as tmp:
        counter = 0

        def fresh() -> Path:
            nonlocal counter
            counter += 1
            return Path(tmp) / f"bench-{counter}.db"

        def fresh_store() -> BenchStore:
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
                seq, beside = await measure(
                    "W1-seq and its baselines, alternating",
                    lambda: workload_sequential_with_floor(
                        fresh_store(),
                        None if on_postgres else fresh(),
                        sizes,
                        progress,
                        peer=peer,
                    ),
                )
                found["W1-seq"] = seq
                base.update(beside)
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
            # with W1-seq, the peer ran in its rounds already
            if (
                peer
                and not on_postgres
                and "W1" in workloads
                and "peer" not in base
                and "peer_skipped" not in results
            ):
                for cache in (False, True):
                    key = "peer_cached" if cache else "peer"
                    progress(f"{key}: running")
                    measured = await baseline_peer(
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
    progress: Progress = quiet,
    **options: Any,
) -> Result:
    """Run the suite ``runs`` times over (fresh files each time); return every run and, per
    ratio and per workload's rate, the median and the range over the runs.

    On a shared machine one run's ratios swing by several points (see docs/performance.md), so a
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
RATED: tuple[str, ...] = ("W1", "W1-seq", "W2", "W5")


#: the loop's costs summarised over runs, where a workload measured them
_LOOP_SERIES = (
    ("loop_cpu_us_per_command", "loop CPU us/command"),
    ("loop_lag_p99_ms", "loop lag p99 ms"),
)


def over_runs(results: Sequence[Result]) -> Result:
    """The median, lowest and highest of each ratio, and of each workload's commands/s, over
    several runs (a ratio or workload missing from a run is left out for that run)."""
    series: dict[str, list[float]] = {}
    for result in results:
        for name, value in result["ratios"].items():
            series.setdefault(name, []).append(value)
    for result in results:
        for name in RATED:
            workload = result["workloads"].get(name)
            if workload:
                series.setdefault(f"{name} commands/s", []).append(workload["commands_per_s"])
            for key, label in _LOOP_SERIES:
                if workload and key in workload:
                    series.setdefault(f"{name} {label}", []).append(workload[key])
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
    if seq and "raw_floor" in base:
        raw_rate = base["raw_floor"]["events_per_s"]
        out["W1seq_vs_raw_floor"] = seq["events_per_s"] / raw_rate
        later = seq.get("later_asks")
        if later and later["mean_ms"] > 0:
            out["W1seq_later_asks_vs_raw_floor"] = 1000 / raw_rate / later["mean_ms"]
    if seq and peers:
        out["W1seq_vs_peer_best"] = seq["commands_per_s"] / max(peers)
    if w1 and "W2" in found:
        out["W2_vs_W1"] = found["W2"]["commands_per_s"] / w1["commands_per_s"]
    return out
