"""The throughput benchmark suite behind ``actorsource bench``.

Each workload runs on a fresh SQLite file at the default durability (WAL, synchronous=FULL), or,
given a PostgreSQL DSN, in a fresh schema of that database (dropped afterwards) at the server's
durability settings. Baselines are measured in the same run, so that results read as ratios that
survive a noisy machine: the raw batched-insert ceiling, the per-commit fsync floor, and (when
installed) the ``eventsourcing`` package as the Python peer. The baselines are SQLite's, so they
run only with the SQLite store.

Layout: ``workloads`` (W1..W5), ``baselines``, ``suite`` (runs them, derives the ratios),
``report`` (plain text), ``compare`` (A/B against another installation, alternating rounds).
"""

from __future__ import annotations

from ._common import (
    WORKLOADS,
    BenchAccount,
    BenchStore,
    Deposit,
    Deposited,
    DepositMany,
    Progress,
    Result,
    Sizes,
    machine,
    percentile,
    postgres_machine,
)
from .baselines import (
    baseline_ceiling,
    baseline_fsync_floor,
    baseline_peer,
    baseline_raw_floor,
)
from .report import format_repeated, format_table, stderr_progress
from .suite import over_runs, ratios, run_repeated, run_suite
from .workloads import (
    SEQ_ROUNDS,
    workload_hot,
    workload_many,
    workload_memory,
    workload_rehydrate,
    workload_sequential_with_floor,
    workload_skew,
)

__all__ = [
    "SEQ_ROUNDS",
    "WORKLOADS",
    "BenchAccount",
    "BenchStore",
    "Deposit",
    "DepositMany",
    "Deposited",
    "Progress",
    "Result",
    "Sizes",
    "baseline_ceiling",
    "baseline_fsync_floor",
    "baseline_peer",
    "baseline_raw_floor",
    "format_repeated",
    "format_table",
    "machine",
    "over_runs",
    "percentile",
    "postgres_machine",
    "ratios",
    "run_repeated",
    "run_suite",
    "stderr_progress",
    "workload_hot",
    "workload_many",
    "workload_memory",
    "workload_rehydrate",
    "workload_sequential_with_floor",
    "workload_skew",
]
