"""What every part of the suite shares: the benchmark aggregate, the sizes, the result type,
percentiles, and the facts about the machine the numbers were measured on."""

from __future__ import annotations

import os
import platform
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from .. import Aggregate, PostgresEventStore, SQLiteEventStore, apply, command
from ..stores.postgres import redact_dsn, server_facts

Result = dict[str, Any]

Progress = Callable[[str], None]

#: the stores the suite makes for its workloads (concrete types: it reads their counters)
BenchStore = SQLiteEventStore | PostgresEventStore

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


def quiet(_: str) -> None:
    """Report no progress."""


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Return the value at ``fraction`` of a sorted sequence (nearest rank)."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def latency(latencies: list[float]) -> Result:
    """The p50, p99 and p99.9 of latencies in seconds, in ms (sorts the list in place)."""
    latencies.sort()
    return {
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "p999_ms": percentile(latencies, 0.999) * 1000,
    }


def ask_split(latencies: list[float]) -> Result | None:
    """How many asks, their mean and median latency (None: there were none)."""
    if not latencies:
        return None
    return {
        "count": len(latencies),
        "mean_ms": sum(latencies) / len(latencies) * 1000,
        "p50_ms": percentile(sorted(latencies), 0.50) * 1000,
    }


def check(condition: bool, message: str) -> None:
    """Fail the run when a workload's own result is wrong (a benchmark of a bug is no use)."""
    if not condition:
        raise AssertionError(message)


def machine() -> Result:
    """Describe the machine and settings the numbers were measured on (the SQLite store)."""
    return {
        "cpus": os.cpu_count(),
        # fewer under taskset or a container's CPU set: it changes the numbers (docs/performance.md)
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
