"""A smoke run of every benchmark workload at tiny sizes, so that the suite never rots."""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

import pytest

from actorsource import bench
from actorsource.cli import main


async def test_every_workload_runs_and_checks_its_own_results(tmp_path: Path) -> None:
    results = await bench.run_suite(
        bench.WORKLOADS, bench.Sizes.quick(), directory=tmp_path, peer=False
    )
    found = results["workloads"]
    assert set(found) == set(bench.WORKLOADS)
    assert found["W1"]["commands"] == 400 and found["W1"]["commands_per_s"] > 0
    assert found["W2"]["commands_per_commit"] > 1  # the hot actor batches its commands
    # the ceiling was measured before and after W1; its rate is their mean
    before, after = results["baselines"]["ceiling"]["before_and_after_W1"]
    assert results["baselines"]["ceiling"]["events_per_s"] == (before + after) / 2
    # W1-seq and the fsync floor ran in alternating rounds, the same number of rows each
    assert found["W1-seq"]["rounds_alternated_with_floor"] == bench.SEQ_ROUNDS
    assert results["baselines"]["fsync_floor"]["rows"] == found["W1-seq"]["commands"] == 50
    # its first ask to each of the 20 aggregates loads it; the 30 later ones only commit
    assert found["W1-seq"]["first_asks"]["count"] == 20
    assert found["W1-seq"]["later_asks"]["count"] == 30
    assert found["W1-seq"]["first_asks"]["mean_ms"] > 0
    assert found["W3"]["no_snapshot"]["events_replayed"] == 300
    assert found["W3"]["snapshot_every_100"]["events_replayed"] < 100
    assert found["W4"]["bytes_per_idle_actor"] > 0
    assert found["W5"]["activations"] >= found["W5"]["passivations"] > 0
    ratios = results["ratios"]
    assert set(ratios) == {
        "W1_vs_ceiling",
        "W1seq_vs_fsync_floor",
        "W1seq_later_asks_vs_fsync_floor",
        "W1seq_vs_raw_floor",
        "W1seq_later_asks_vs_raw_floor",
        "W2_vs_W1",
    }
    # the later asks' mean latency against the floor's time a row (higher is better, as the
    # target ratio beside it)
    floor_ms = 1000 / results["baselines"]["fsync_floor"]["events_per_s"]
    later_ms = found["W1-seq"]["later_asks"]["mean_ms"]
    assert ratios["W1seq_later_asks_vs_fsync_floor"] == pytest.approx(floor_ms / later_ms)
    table = bench.format_table(results)
    assert "W1_vs_ceiling" in table
    assert "W1-seq 20 first asks (load, then commit)" in table
    assert "30 later asks" in table and "the fsync floor:" in table
    assert "W1seq_later_asks_vs_fsync_floor" in table
    assert "the raw floor:" in table and "raw floor (in-thread)" in table


async def test_the_raw_floor_alternates_with_w1_seq_and_w1_seq_is_reported_against_it(
    tmp_path: Path,
) -> None:
    results = await bench.run_suite(["W1-seq"], bench.Sizes.quick(), directory=tmp_path, peer=False)
    raw, seq = results["baselines"]["raw_floor"], results["workloads"]["W1-seq"]
    assert raw["rows"] == seq["commands"] == 50
    assert raw["rounds"] == seq["rounds_alternated_with_floor"] == bench.SEQ_ROUNDS
    assert raw["events_per_s"] > 0
    assert results["ratios"]["W1seq_vs_raw_floor"] == pytest.approx(
        seq["events_per_s"] / raw["events_per_s"]
    )


async def test_w1_and_w1_seq_report_the_loop_s_lag_and_cpu_per_command(tmp_path: Path) -> None:
    results = await bench.run_suite(
        ["W1", "W1-seq", "W2"], bench.Sizes.quick(), directory=tmp_path, peer=False
    )
    for name in ("W1", "W1-seq"):
        found = results["workloads"][name]
        assert found["loop_cpu_us_per_command"] > 0
        # one thread's CPU time over the measured stretches (a few µs longer than the clock's)
        loop_cpu_seconds = found["loop_cpu_us_per_command"] * found["commands"] / 1e6
        assert loop_cpu_seconds <= found["seconds"] + 0.05
        assert found["loop_lag_samples"] > 0
        assert 0 <= found["loop_lag_p99_ms"] <= found["loop_lag_max_ms"]
    assert "loop_cpu_us_per_command" not in results["workloads"]["W2"]
    table = bench.format_table(results)
    assert "W1 on the loop:" in table and "W1-seq on the loop:" in table
    summary = bench.over_runs([results, results])
    assert summary["W1 loop CPU us/command"]["median"] == pytest.approx(
        results["workloads"]["W1"]["loop_cpu_us_per_command"]
    )
    assert "W1-seq loop lag p99 ms" in summary


async def test_w1_seq_is_reported_against_the_peer_s_sequential_best_in_alternating_rounds(
    tmp_path: Path,
) -> None:
    pytest.importorskip("eventsourcing")
    results = await bench.run_suite(["W1-seq"], bench.Sizes.quick(), directory=tmp_path)
    base = results["baselines"]
    for key in ("peer", "peer_cached"):
        assert base[key]["rounds"] == bench.SEQ_ROUNDS
        assert base[key]["commands"] == bench.Sizes.quick().peer_commands
    best = max(base["peer"]["commands_per_s"], base["peer_cached"]["commands_per_s"])
    seq = results["workloads"]["W1-seq"]
    assert results["ratios"]["W1seq_vs_peer_best"] == pytest.approx(seq["commands_per_s"] / best)
    assert "W1_vs_peer_best" not in results["ratios"]  # W1 did not run
    assert "W1seq_vs_peer_best" in bench.format_table(results)


def test_cli_bench_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["bench", "--quick", "--json", "--no-peer", "-w", "W2", "--dir", str(tmp_path)])
    assert status == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["workloads"]["W2"]["commands"] == 200
    assert printed["machine"]["durability"] == "WAL, synchronous=FULL"


def test_cli_bench_with_tune_gc_says_so_and_restores_the_collector(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = gc.get_threshold()
    status = main(
        ["bench", "--quick", "--no-peer", "-w", "W1", "--tune-gc", "--dir", str(tmp_path)]
    )
    assert status == 0
    assert "garbage collector: tuned" in capsys.readouterr().out
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_cli_bench_with_tune_switch_interval_says_so_and_restores_the_interval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sys.getswitchinterval()
    status = main(
        [
            "bench",
            *("--quick", "--no-peer", "-w", "W1", "--tune-switch-interval"),
            *("--dir", str(tmp_path)),
        ]
    )
    assert status == 0
    assert "switch interval: tuned (tune_switch_interval: 1 ms)" in capsys.readouterr().out
    assert sys.getswitchinterval() == before


def test_percentile_uses_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert bench.percentile(values, 0.5) == 50.0
    assert bench.percentile(values, 0.99) == 99.0
    assert bench.percentile([], 0.5) == 0.0


async def test_every_workload_runs_on_postgresql_and_leaves_no_schema(
    postgres_dsn: str, tmp_path: Path
) -> None:
    import asyncpg  # type: ignore[import-untyped]

    results = await bench.run_suite(
        bench.WORKLOADS, bench.Sizes.quick(), directory=tmp_path, postgres_dsn=postgres_dsn
    )
    found = results["workloads"]
    assert set(found) == set(bench.WORKLOADS)
    assert found["W1"]["commands"] == 400 and found["W1"]["commands_per_commit"] > 1
    assert found["W3"]["no_snapshot"]["events_replayed"] == 300
    assert results["machine"]["store"].startswith("PostgreSQL ")
    assert results["baselines"] == {}  # SQLite's baselines: not run, and said so
    assert "not run on PostgreSQL" in bench.format_table(results)
    assert set(results["ratios"]) == {"W2_vs_W1"}
    conn = await asyncpg.connect(postgres_dsn)
    try:
        left = await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1", f"bench_{os.getpid()}_%"
        )
    finally:
        await conn.close()
    assert left == []


def test_cli_refuses_a_store_that_is_neither_sqlite_nor_a_dsn(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--quick", "--store", "mysql://x"])
    assert "--store must be sqlite or a postgresql:// DSN" in capsys.readouterr().err


def test_over_runs_reports_each_ratio_and_rate_as_its_median_and_range() -> None:
    def run(w1_ratio: float, w1_rate: float, *, with_w2: bool) -> bench.Result:
        workloads: bench.Result = {"W1": {"commands_per_s": w1_rate}}
        found_ratios = {"W1_vs_ceiling": w1_ratio}
        if with_w2:
            workloads["W2"] = {"commands_per_s": 2 * w1_rate}
            found_ratios["W2_vs_W1"] = 2.0
        return {"workloads": workloads, "ratios": found_ratios}

    summary = bench.over_runs(
        [
            run(0.30, 20_000, with_w2=True),
            run(0.40, 30_000, with_w2=False),
            run(0.35, 26_000, with_w2=True),
        ]
    )

    assert summary["W1_vs_ceiling"] == {
        "median": 0.35,
        "min": 0.30,
        "max": 0.40,
        "values": [0.30, 0.40, 0.35],
    }
    assert summary["W1 commands/s"]["median"] == 26_000
    # a workload missing from a run is left out for that run, not counted as zero
    assert summary["W2 commands/s"]["values"] == [40_000, 52_000]
    assert summary["W2 commands/s"]["median"] == 46_000
    assert summary["W2_vs_W1"]["values"] == [2.0, 2.0]


def test_cli_bench_repeat_runs_the_suite_that_many_times_and_reports_medians(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--quick", "--no-peer", "-w", "W2", "--dir", str(tmp_path), "--repeat", "2"]
    assert main([*argv, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    runs = printed["runs"]
    assert len(runs) == 2
    rates = [run["workloads"]["W2"]["commands_per_s"] for run in runs]
    assert printed["over_runs"]["W2 commands/s"]["values"] == rates
    assert printed["over_runs"]["W2 commands/s"]["median"] == pytest.approx(sum(rates) / 2)

    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "over 2 runs" in table and "median" in table and "W2 commands/s" in table


def test_cli_bench_refuses_a_repeat_below_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bench", "--quick", "--repeat", "0"])
    assert exited.value.code == 2
    assert "--repeat: must be a positive whole number, got '0'" in capsys.readouterr().err


async def test_run_repeated_refuses_a_count_below_one() -> None:
    with pytest.raises(ValueError, match="runs must be a positive int, got 0"):
        await bench.run_repeated(0, ["W2"], bench.Sizes.quick())


def test_the_header_says_when_the_process_may_use_fewer_cpus_than_the_machine_has(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # under taskset (or a container's CPU set) the numbers change: the report must say so
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)

    def report() -> bench.Result:
        settings = {"gc": "default", "switch_interval": "5 ms"}  # as run_suite adds them
        machine = {**bench.machine(), **settings}
        return {"machine": machine, "workloads": {}, "baselines": {}, "ratios": {}}

    pinned = report()
    assert pinned["machine"]["cpus_usable"] == 1
    assert bench.format_table(pinned).startswith("actorsource bench: 4 CPUs (1 usable by this")

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert bench.format_table(report()).startswith("actorsource bench: 4 CPUs, Python")


async def test_w1_alone_still_measures_the_peer_on_its_own(tmp_path: Path) -> None:
    pytest.importorskip("eventsourcing")
    results = await bench.run_suite(["W1"], bench.Sizes.quick(), directory=tmp_path)
    base = results["baselines"]
    assert base["peer"]["rounds"] == base["peer_cached"]["rounds"] == 1
    best = max(base["peer"]["commands_per_s"], base["peer_cached"]["commands_per_s"])
    w1 = results["workloads"]["W1"]["commands_per_s"]
    assert results["ratios"]["W1_vs_peer_best"] == pytest.approx(w1 / best)
