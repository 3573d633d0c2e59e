"""Same-sitting A/B comparison: another installation's ``actorsource bench`` (A) against this
one's (B), run in alternating rounds A B A B ..., each round a fresh process of its Python.

Only the other side's command line and its ``--json`` output are used, so A may be an older
version of actorsource (one whose bench has ``--json``); a number only one side reports is
shown for that side, with no ratio.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from ..stores.postgres import redact_dsn
from ._common import Progress, Result, quiet

#: what is compared: a label, where it is in a run's JSON, and whether higher is better
METRICS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    *(
        item
        for name in ("W1", "W1-seq", "W2", "W5")
        for item in (
            (f"{name} commands/s", ("workloads", name, "commands_per_s"), True),
            (f"{name} p99 ms", ("workloads", name, "p99_ms"), False),
            (f"{name} loop CPU us/command", ("workloads", name, "loop_cpu_us_per_command"), False),
            (f"{name} loop lag p99 ms", ("workloads", name, "loop_lag_p99_ms"), False),
            (f"{name} loop lag max ms", ("workloads", name, "loop_lag_max_ms"), False),
        )
    ),
    ("W3 ms/activation", ("workloads", "W3", "no_snapshot", "ms_per_activation"), False),
    (
        "W3 ms/activation (snapshots)",
        ("workloads", "W3", "snapshot_every_100", "ms_per_activation"),
        False,
    ),
    ("W4 bytes per idle actor", ("workloads", "W4", "bytes_per_idle_actor"), False),
    (
        "W4 activations+passivations/s",
        ("workloads", "W4", "activations_plus_passivations_per_s"),
        True,
    ),
    # the baselines are the same code on both sides: their B/A shows the machine's drift
    ("ceiling events/s", ("baselines", "ceiling", "events_per_s"), True),
    ("fsync floor events/s", ("baselines", "fsync_floor", "events_per_s"), True),
    ("raw floor events/s", ("baselines", "raw_floor", "events_per_s"), True),
    ("eventsourcing commands/s", ("baselines", "peer", "commands_per_s"), True),
    ("eventsourcing+cache commands/s", ("baselines", "peer_cached", "commands_per_s"), True),
)

#: runs one side's bench: (python, bench arguments) -> its JSON results
Runner = Callable[[str, Sequence[str]], Result]


def run_side(python: str, arguments: Sequence[str]) -> Result:
    """Run ``python -m actorsource.cli bench --json ARGUMENTS`` and return what it printed.

    The process starts in an empty directory and with ``-P``, so that it imports the
    actorsource installed for that Python, never one in the current directory.

    :raises RuntimeError: if the run fails or prints no JSON
    """
    command = [python, "-P", "-m", "actorsource.cli", "bench", "--json", *arguments]
    with tempfile.TemporaryDirectory(prefix="actorsource-compare-") as empty:
        done = subprocess.run(command, cwd=empty, capture_output=True, check=False)
    shown = " ".join(_redacted(command))
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-5:]
        msg = (
            f"{shown} exited with status {done.returncode}: "
            f"{' / '.join(tail) or 'no message'}; check that this Python has actorsource "
            "installed and that its bench accepts these options"
        )
        raise RuntimeError(_without_secrets(msg, command))
    try:
        parsed = orjson.loads(done.stdout)
    except orjson.JSONDecodeError as exc:
        msg = f"{shown} printed no JSON results ({exc}); is its bench too old?"
        raise RuntimeError(msg) from exc
    if not isinstance(parsed, dict) or "workloads" not in parsed:
        msg = f"{shown} printed JSON without workloads: not a bench run's results"
        raise RuntimeError(msg)
    return parsed


def _redacted(arguments: Sequence[str]) -> list[str]:
    """The arguments with any DSN's password hidden (a ``--store`` DSN may hold one)."""
    return [redact_dsn(argument) for argument in arguments]


def _without_secrets(text: str, arguments: Sequence[str]) -> str:
    """``text`` with each DSN among ``arguments`` replaced by its redacted form."""
    for argument, safe in zip(arguments, _redacted(arguments), strict=True):
        if safe != argument:
            text = text.replace(argument, safe)
    return text


def describe(python: str) -> Result:
    """Which actorsource a Python imports, and its version (for the report's header).

    :raises ValueError: if ``python`` cannot be run or has no actorsource
    """
    code = (
        "import sys, importlib.metadata as m, actorsource\n"
        "print(m.version('actorsource')); print(actorsource.__file__); "
        "print(sys.version.split()[0])"
    )
    try:
        done = subprocess.run(
            [python, "-P", "-c", code], capture_output=True, check=False, cwd=os.sep
        )
    except OSError as exc:
        msg = f"--compare: cannot run {python!r} ({exc}); give the path of another venv's python"
        raise ValueError(msg) from exc
    lines = done.stdout.decode(errors="replace").splitlines()
    if done.returncode != 0 or len(lines) < 3:
        msg = f"--compare: {python!r} cannot import actorsource; install it in that environment"
        raise ValueError(msg)
    return {
        "python": python,
        "actorsource": lines[0],
        "location": os.path.dirname(lines[1]),
        "python_version": lines[2],
    }


def _value(results: Result, path: Sequence[str]) -> float | None:
    found: Any = results
    for key in path:
        if not isinstance(found, dict) or key not in found:
            return None
        found = found[key]
    if isinstance(found, bool) or not isinstance(found, int | float):
        return None
    return float(found)


def _spread(values: list[float]) -> Result:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def compare(
    other: str,
    arguments: Sequence[str],
    rounds: int,
    progress: Progress = quiet,
    *,
    this: str = sys.executable,
    run: Runner = run_side,
    describe_side: Callable[[str], Result] = describe,
) -> Result:
    """Run the bench with ``other`` (A) and ``this`` (B) in ``rounds`` alternating rounds.

    :param other: the other installation's Python (side A)
    :param arguments: the bench's options for both sides (``--json`` is added)
    :param this: the Python of side B (this installation's, by default)
    :param run: what runs one side (the default starts a process)
    :param describe_side: what tells which actorsource a Python has (for the header)
    :return: both sides' descriptions, the order the runs went in, and per metric each
        side's median, min, max and values (None for a side that does not report it), and
        B/A (the ratio of the medians, None unless both sides report it)
    :raises ValueError: if ``rounds`` is not a positive int
    """
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        msg = f"rounds must be a positive int, got {rounds!r}"
        raise ValueError(msg)
    sides = {"A": other, "B": this}
    described = {side: describe_side(python) for side, python in sides.items()}  # fail fast
    runs: dict[str, list[Result]] = {"A": [], "B": []}
    order: list[str] = []
    for number in range(1, rounds + 1):
        for side, python in sides.items():
            progress(f"round {number} of {rounds}: {side} ({python})")
            runs[side].append(run(python, arguments))
            order.append(side)
    metrics: Result = {}
    ratio_names = sorted(
        set().union(*(run_result.get("ratios", {}) for run_result in runs["A"] + runs["B"]))
    )
    wanted = [*METRICS, *((name, ("ratios", name), True) for name in ratio_names)]
    for label, path, higher_is_better in wanted:
        series = {
            side: [v for v in (_value(r, path) for r in found) if v is not None]
            for side, found in runs.items()
        }
        if not series["A"] and not series["B"]:
            continue  # neither side measured it
        a = _spread(series["A"]) if series["A"] else None
        b = _spread(series["B"]) if series["B"] else None
        metrics[label] = {
            "A": a,
            "B": b,
            "B/A": b["median"] / a["median"] if a and b and a["median"] else None,
            "higher_is_better": higher_is_better,
        }
    return {
        "sides": described,
        "arguments": _redacted(arguments),
        "rounds": rounds,
        "order": order,
        "machine": runs["B"][0].get("machine", {}),
        "metrics": metrics,
    }


def format_compare(compared: Result) -> str:
    """Render :func:`compare`'s results: per metric, each side's median [min-max] and B/A."""
    lines = []
    for side in ("A", "B"):
        d = compared["sides"][side]
        lines.append(
            f"{side}: {d['python']} (actorsource {d['actorsource']} at {d['location']}, "
            f"Python {d['python_version']})"
        )
    arguments = " ".join(compared["arguments"]) or "(defaults)"
    lines.append(
        f"{compared['rounds']} alternating rounds ({' '.join(compared['order'])}); "
        f"bench options: {arguments}"
    )
    lines.append("")
    lines.append(f"{'metric':<34}{'A median [min-max]':>30}{'B median [min-max]':>30}{'B/A':>8}")
    for label, m in compared["metrics"].items():
        cells = [_cell(label, m[side]) for side in ("A", "B")]
        ratio = m["B/A"]
        better = "" if m["higher_is_better"] else " (lower is better)"
        ratio_text = f"{ratio:.2f}" if ratio is not None else "-"
        lines.append(f"{label:<34}{cells[0]:>30}{cells[1]:>30}{ratio_text:>8}{better}")
    return "\n".join(lines)


def _cell(label: str, spread: Result | None) -> str:
    if spread is None:
        return "-"  # that side does not measure it
    median, low, high = spread["median"], spread["min"], spread["max"]
    if label.endswith("/s") or label.startswith("W4 bytes"):
        return f"{median:,.0f} [{low:,.0f}-{high:,.0f}]"
    return f"{median:.3g} [{low:.3g}-{high:.3g}]"
