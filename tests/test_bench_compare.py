"""The bench's A/B mode: another installation's bench against this one's, alternating rounds."""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from actorsource.bench import Result, compare
from actorsource.cli import main


def test_cli_compare_alternates_rounds_and_reports_medians_and_b_over_a(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--quick", "--no-peer", "-w", "W2", "--dir", str(tmp_path)]
    argv += ["--compare", sys.executable, "--rounds", "2"]
    assert main([*argv, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["order"] == ["A", "B", "A", "B"]
    assert printed["rounds"] == 2
    assert printed["sides"]["A"]["python"] == printed["sides"]["B"]["python"] == sys.executable
    # both sides were given the same options, and printed JSON for them
    assert printed["arguments"] == ["-w", "W2", "--quick", "--no-peer", "--dir", str(tmp_path)]
    rate = printed["metrics"]["W2 commands/s"]
    for side in ("A", "B"):
        values = rate[side]["values"]
        assert len(values) == 2 and all(value > 0 for value in values)
        assert rate[side]["median"] == pytest.approx(statistics.median(values))
        assert rate[side]["min"] == min(values) and rate[side]["max"] == max(values)
    assert rate["B/A"] == pytest.approx(rate["B"]["median"] / rate["A"]["median"])
    assert "W1 commands/s" not in printed["metrics"]  # not run: not reported

    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "2 alternating rounds (A B A B)" in table
    assert "B/A" in table and "W2 commands/s" in table


def _fake_run(calls: list[str]) -> compare.Runner:
    """A side that reports W1 at 100 commands/s a call so far; only B reports loop CPU."""

    def run(python: str, arguments: Sequence[str]) -> Result:
        calls.append(python)
        w1: Result = {"commands_per_s": 100.0 * len(calls), "p99_ms": 2.0}
        if python == "new":
            w1["loop_cpu_us_per_command"] = 20.0
        return {"workloads": {"W1": w1}, "ratios": {"W1_vs_ceiling": 0.5}}

    return run


def _fake_describe(python: str) -> Result:
    return {"python": python, "actorsource": "0", "location": "/x", "python_version": "3"}


def test_compare_runs_the_sides_in_alternating_rounds_and_takes_each_side_s_median() -> None:
    calls: list[str] = []
    compared = compare.compare(
        "old",
        ["--quick"],
        3,
        this="new",
        run=_fake_run(calls),
        describe_side=_fake_describe,
    )
    assert calls == ["old", "new"] * 3
    assert compared["order"] == ["A", "B"] * 3
    rate = compared["metrics"]["W1 commands/s"]
    assert rate["A"]["values"] == [100.0, 300.0, 500.0]
    assert rate["B"]["values"] == [200.0, 400.0, 600.0]
    assert (rate["A"]["median"], rate["B"]["median"]) == (300.0, 400.0)
    assert rate["B/A"] == pytest.approx(400 / 300)
    assert rate["higher_is_better"] is True
    assert compared["metrics"]["W1 p99 ms"]["higher_is_better"] is False
    assert compared["metrics"]["W1_vs_ceiling"]["B/A"] == pytest.approx(1.0)
    # a number only the new side reports is shown for it, with no ratio
    cpu = compared["metrics"]["W1 loop CPU us/command"]
    assert cpu["A"] is None and cpu["B"]["median"] == 20.0 and cpu["B/A"] is None
    table = compare.format_compare(compared)
    cpu_line = next(line for line in table.splitlines() if line.startswith("W1 loop CPU"))
    assert "-" in cpu_line.split()[4:] and "20 [20-20]" in cpu_line


def test_compare_refuses_rounds_below_one() -> None:
    with pytest.raises(ValueError, match="rounds must be a positive int, got 0"):
        compare.compare("old", [], 0, run=_fake_run([]), describe_side=_fake_describe)


def test_cli_compare_says_when_the_other_python_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "no-such-python")
    assert main(["bench", "--quick", "--compare", missing]) == 1
    assert f"--compare: cannot run {missing!r}" in capsys.readouterr().err


def test_cli_compare_refuses_repeat_and_rounds_alone(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--quick", "--compare", sys.executable, "--repeat", "2"])
    assert "--repeat does not combine with --compare: use --rounds N" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--quick", "--rounds", "2"])
    assert "--rounds is for --compare PYTHON" in capsys.readouterr().err


def test_a_failing_side_is_reported_without_the_dsn_s_password() -> None:
    dsn = "postgresql://app:SECRET@127.0.0.1:1/bank"  # nothing listens on port 1
    with pytest.raises(RuntimeError) as raised:
        compare.run_side(sys.executable, ["--quick", "-w", "W2", "--store", dsn])
    message = str(raised.value)
    assert "exited with status 1" in message
    assert "SECRET" not in message and "--store postgresql://app:***@127.0.0.1:1/bank" in message
